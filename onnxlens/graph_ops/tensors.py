"""Access to a graph's nodes, attributes and constant tensors.

Exporters store weights as initializers or as ``Constant`` nodes (often both in one model);
these helpers treat the two alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

#: Prefix of every tensor, node or input that an onnxlens transform adds to a graph.
RESERVED_PREFIX = "onnxlens__"

_CONSTANT_VALUE_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of a node attribute, or ``default`` when the node does not set it."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from iter_nodes(sub)


def iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every dense stored tensor: initializers and Constant node values, subgraphs included."""
    return _graph_tensors(graph, sparse=False)


def stored_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model stores — initializers, sparse tensors' values and indices, tensors
    in node attributes, in subgraphs and in model-local functions: each may point to external
    data."""
    yield from _graph_tensors(model.graph, sparse=True)
    for function in model.functions:
        yield from _node_tensors(function.node, sparse=True)


def _graph_tensors(graph: onnx.GraphProto, sparse: bool) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    if sparse:
        for tensor in graph.sparse_initializer:
            yield from (tensor.values, tensor.indices)
    yield from _node_tensors(graph.node, sparse)


def _node_tensors(nodes, sparse: bool) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif sparse and attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            elif sparse and attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                for tensor in attr.sparse_tensors:
                    yield from (tensor.values, tensor.indices)
        for sub in subgraphs(node):
            yield from _graph_tensors(sub, sparse)


def constant_node_array(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node as an array, or None for string/sparse constants."""
    for attr in node.attribute:
        if attr.name not in _CONSTANT_VALUE_ATTRS:
            continue
        value = onnx.helper.get_attribute_value(attr)
        if attr.name == "value":
            return numpy_helper.to_array(value)
        dtype = np.float32 if attr.name.startswith("value_float") else np.int64
        return np.asarray(value, dtype=dtype)
    return None


def constant_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Map tensor name → value for every initializer and Constant node output of the graph."""
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = constant_node_array(node)
            if value is not None:
                arrays[node.output[0]] = value
    return arrays


def is_float_tensor(tensor: onnx.TensorProto) -> bool:
    """True for the floating-point element types (weights, as opposed to shapes and indices)."""
    return tensor.data_type in _FLOAT_TYPES


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def tensor_numel(tensor: onnx.TensorProto) -> int:
    """Number of elements of a stored tensor, read from its dims (no data is decoded)."""
    return int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1


class NameAllocator:
    """Hands out tensor and node names with the reserved prefix that are unused in a model."""

    def __init__(self, model: onnx.ModelProto):
        self._used = set()
        self._next: dict[str, int] = {}
        graph = model.graph
        self._used.update(t.name for t in graph.initializer)
        self._used.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
        for node in iter_nodes(graph):
            self._used.update(node.input)
            self._used.update(node.output)
            self._used.add(node.name)

    def __call__(self, hint: str) -> str:
        base = f"{RESERVED_PREFIX}{hint}"
        i = self._next.get(base, 0)  # names are base, base_1, base_2, …: resume where the last one ended
        name = f"{base}_{i}" if i else base
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._next[base] = i + 1
        self._used.add(name)
        return name
