"""Counts that describe a model: op histogram, parameters, nodes, and its quantization."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from onnxlens.graph_ops.quantization import quantization_summary
from onnxlens.graph_ops.tensors import is_float_tensor, iter_nodes, iter_tensors, tensor_numel


@dataclass(frozen=True)
class GraphSummary:
    op_histogram: dict[str, int]  #: op type (``domain::op`` outside the default domain) → count
    node_count: int
    #: floating-point and 8/4-bit integer (quantized weight) elements in initializers and
    #: Constant nodes
    parameter_count: int
    parameter_bytes: int
    quantization: dict | None = None  #: see :func:`~onnxlens.graph_ops.quantization.quantization_summary`

    def to_dict(self) -> dict:
        return {
            "op_histogram": dict(self.op_histogram),
            "node_count": self.node_count,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "quantization": self.quantization,
        }


_QUANTIZED_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4)


def summarize_graph(model: onnx.ModelProto) -> GraphSummary:
    """Summarize a model as exported: Constant-node weights count like initializers."""
    ops = Counter()
    for node in iter_nodes(model.graph):
        ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    params = nbytes = 0
    for tensor in iter_tensors(model.graph):
        if is_float_tensor(tensor) or tensor.data_type in _QUANTIZED_TYPES:
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

