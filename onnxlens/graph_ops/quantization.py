"""Facts about an int8 graph: how it is quantized (format, integer types, granularity, ops),
the integer type each QuantizeLinear produces, and which values its quantizers saturate."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx

from onnxlens.graph_ops.tensors import constant_arrays, node_attr

#: integer range of each quantized element type
INTEGER_RANGES = {
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT4: (-8, 7),
    onnx.TensorProto.UINT4: (0, 15),
}


#: Integer-kernel ops of the QOperator format (ai.onnx and com.microsoft), with the input
#: positions of their (scale, zero point) pairs.
QOPERATOR_QPARAMS = {
    "QLinearConv": ((1, 2), (4, 5), (6, 7)), "QLinearMatMul": ((1, 2), (4, 5), (6, 7)),
    "QGemm": ((1, 2), (4, 5), (7, 8)), "QLinearAdd": ((1, 2), (4, 5), (6, 7)), "QLinearMul": ((1, 2), (4, 5), (6, 7)),
    "QLinearGlobalAveragePool": ((1, 2), (3, 4)), "QLinearAveragePool": ((1, 2), (3, 4)),
    "QLinearLeakyRelu": ((1, 2), (3, 4)), "QLinearSigmoid": ((1, 2), (3, 4)), "QLinearSoftmax": ((1, 2), (3, 4)),
    "QLinearConcat": (), "DynamicQuantizeLinear": (),
    # dynamic quantization: zero points only (the scales multiply the product afterwards)
    "MatMulInteger": ((None, 2), (None, 3)), "ConvInteger": ((None, 2), (None, 3)),
}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def integer_type(node: onnx.NodeProto, zero_point_type: int | None) -> int:
    """The element type a QuantizeLinear produces: its zero point's, else its ``output_dtype``
    attribute, else uint8 (as ONNX defines it)."""
    return zero_point_type or node_attr(node, "output_dtype", 0) or onnx.TensorProto.UINT8


@dataclass(frozen=True)
class Quantizer:
    """One QuantizeLinear with constant parameters: q = saturate(round(x / scale) + zero)."""

    tensor: str  #: the float tensor it quantizes
    scale: np.ndarray
    zero: np.ndarray
    axis: int
    low: int
    high: int

    def saturated(self, values: np.ndarray) -> np.ndarray:
        """Per row of ``values`` (this quantizer's input), the share of elements that
        quantize outside the integer range."""
        shape = [1] * values.ndim
        if self.scale.size > 1:
            shape[self.axis % values.ndim] = -1
        level = np.round(values / self.scale.reshape(shape)) + self.zero.reshape(shape)
        outside = (level < self.low) | (level > self.high)
        return outside.reshape(len(values), -1).mean(axis=1)


def quantizers(model: onnx.ModelProto) -> list[Quantizer]:
    """Every QuantizeLinear of the graph that quantizes a computed tensor (not a constant
    weight) with constant scale and zero point to an integer type of known range, in graph
    order."""
    consts = constant_arrays(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts or node.input[1] not in consts:
            continue
        zero_name = node.input[2] if len(node.input) > 2 else ""
        zero = consts.get(zero_name)
        if zero_name and zero is None:
            continue
        elem = integer_type(node, None if zero is None else onnx.helper.np_dtype_to_tensor_dtype(zero.dtype))
        if elem not in INTEGER_RANGES:
            continue
        zero = np.zeros(1) if zero is None else zero.astype(np.float64)
        found.append(Quantizer(node.input[0], consts[node.input[1]].astype(np.float64), zero,
                               node_attr(node, "axis", 1), *INTEGER_RANGES[elem]))
    return found


def quantization_summary(model: onnx.ModelProto) -> dict | None:
    """How a model is quantized, or None: ``format`` (QDQ: Quantize/DequantizeLinear around
    float ops; QOperator: integer-kernel ops such as QLinearConv; dynamic: activations
    quantized at run time by DynamicQuantizeLinear for MatMulInteger/ConvInteger), the integer ``types``,
    ``granularity`` (per-tensor and/or per-channel scales) and the quantized ``ops``."""
    graph = model.graph
    consts = constant_arrays(graph)
    qdq = [n for n in graph.node if n.op_type in _QDQ_OPS]
    qop = [n for n in graph.node if n.op_type in QOPERATOR_QPARAMS]
    if not qdq and not qop:
        return None
    pairs = [(n.input[1], n.input[2] if len(n.input) > 2 else "") for n in qdq]
    pairs += [("" if s is None else n.input[s], n.input[z]) for n in qop for s, z in QOPERATOR_QPARAMS[n.op_type]
              if z < len(n.input)]
    types, granularity = set(), set()
    for scale, zero in pairs:
        if zero in consts:
            types.add(consts[zero].dtype.name)
        known = scale if scale in consts else zero if not scale and zero in consts else None
        if known:
            granularity.add("per-channel" if consts[known].size > 1 else "per-tensor")
    dequantized = {o for n in qdq if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_ops = Counter(n.op_type for n in qop)
    quantized_ops.update(n.op_type for n in graph.node
                         if n.op_type not in _QDQ_OPS and any(i in dequantized for i in n.input))
    return {
        "format": ("dynamic" if any(n.op_type == "DynamicQuantizeLinear" for n in qop)
                   else "QOperator" if qop else "QDQ"),
        "types": sorted(types) or ["uint8"],
        "granularity": sorted(granularity),
        "ops": dict(sorted(quantized_ops.items())),
    }
