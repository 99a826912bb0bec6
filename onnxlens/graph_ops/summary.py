"""Counts that describe a model: op histogram, parameters, nodes, and its quantization."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from onnxlens.graph_ops.tensors import constant_arrays, is_float_tensor, iter_nodes, iter_tensors, tensor_numel

#: Integer-kernel ops of the QOperator format (ai.onnx and com.microsoft), with the input
#: positions of their (scale, zero point) pairs.
QOPERATOR_QPARAMS = {
    "QLinearConv": ((1, 2), (4, 5), (6, 7)), "QLinearMatMul": ((1, 2), (4, 5), (6, 7)),
    "QGemm": ((1, 2), (4, 5), (7, 8)), "QLinearAdd": ((1, 2), (4, 5), (6, 7)), "QLinearMul": ((1, 2), (4, 5), (6, 7)),
    "QLinearGlobalAveragePool": ((1, 2), (3, 4)), "QLinearAveragePool": ((1, 2), (3, 4)),
    "QLinearLeakyRelu": ((1, 2), (3, 4)), "QLinearSigmoid": ((1, 2), (3, 4)), "QLinearSoftmax": ((1, 2), (3, 4)),
    "QLinearConcat": (), "MatMulInteger": (), "ConvInteger": (), "DynamicQuantizeLinear": (),
}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class GraphSummary:
    op_histogram: dict[str, int]  #: op type (``domain::op`` outside the default domain) → count
    node_count: int
    parameter_count: int  #: floating-point elements in initializers and Constant nodes
    parameter_bytes: int
    quantization: dict | None = None  #: see :func:`quantization_summary`; None for a float model

    def to_dict(self) -> dict:
        return {
            "op_histogram": dict(self.op_histogram),
            "node_count": self.node_count,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "quantization": self.quantization,
        }


def summarize_graph(model: onnx.ModelProto) -> GraphSummary:
    """Summarize a model as exported: Constant-node weights count like initializers."""
    ops = Counter()
    for node in iter_nodes(model.graph):
        ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    params = nbytes = 0
    for tensor in iter_tensors(model.graph):
        if is_float_tensor(tensor):
            n = tensor_numel(tensor)
            params += n
            nbytes += n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return GraphSummary(
        op_histogram=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        node_count=sum(ops.values()),
        parameter_count=params,
        parameter_bytes=nbytes,
        quantization=quantization_summary(model),
    )


def quantization_summary(model: onnx.ModelProto) -> dict | None:
    """How a model is quantized, or None: ``format`` (QDQ: Quantize/DequantizeLinear around
    float ops; QOperator: integer-kernel ops such as QLinearConv), the integer ``types``,
    ``granularity`` (per-tensor and/or per-channel scales) and the quantized ``ops``."""
    graph = model.graph
    consts = constant_arrays(graph)
    qdq = [n for n in graph.node if n.op_type in _QDQ_OPS]
    qop = [n for n in graph.node if n.op_type in QOPERATOR_QPARAMS]
    if not qdq and not qop:
        return None
    pairs = [(n.input[1], n.input[2] if len(n.input) > 2 else "") for n in qdq]
    pairs += [(n.input[s], n.input[z]) for n in qop for s, z in QOPERATOR_QPARAMS[n.op_type] if s < len(n.input)]
    types, granularity = set(), set()
    for scale, zero in pairs:
        if zero in consts:
            types.add(consts[zero].dtype.name)
        if scale in consts:
            granularity.add("per-channel" if consts[scale].size > 1 else "per-tensor")
    dequantized = {o for n in qdq if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_ops = Counter(n.op_type for n in qop)
    quantized_ops.update(n.op_type for n in graph.node
                         if n.op_type not in _QDQ_OPS and any(i in dequantized for i in n.input))
    return {
        "format": "QOperator" if qop else "QDQ",
        "types": sorted(types) or ["uint8"],
        "granularity": sorted(granularity),
        "ops": dict(sorted(quantized_ops.items())),
    }
