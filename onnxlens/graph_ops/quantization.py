"""The quantizers of an int8 graph: where each QuantizeLinear maps float values to integers,
and which values it saturates."""

from __future__ import annotations

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
        elem = onnx.helper.np_dtype_to_tensor_dtype(zero.dtype) if zero is not None else (
            node_attr(node, "output_dtype", 0) or onnx.TensorProto.UINT8)
        if elem not in INTEGER_RANGES:
            continue
        zero = np.zeros(1) if zero is None else zero.astype(np.float64)
        found.append(Quantizer(node.input[0], consts[node.input[1]].astype(np.float64), zero,
                               node_attr(node, "axis", 1), *INTEGER_RANGES[elem]))
    return found
