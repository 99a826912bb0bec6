"""Half-precision models (float16, bfloat16) and their float32 twin: the same graph with every
half-precision parameter, cast and declared type raised to float32, built by graph surgery.
Explaining the twin keeps gradients and relevance free of float16 underflow and rounding; the
deployed model is still what forward-only methods and metrics run."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxlens.graph_ops.tensors import iter_nodes

HALF_TYPES = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
#: attributes that name an element type
_TYPE_ATTRS = {"to", "dtype", "output_dtype"}


def half_precision(model: onnx.ModelProto) -> str | None:
    """"float16" or "bfloat16" when the graph computes in half precision (half parameters or a
    cast to half), else None."""
    graph = model.graph
    types = [t.data_type for t in graph.initializer]
    types += [a.i for n in iter_nodes(graph) for a in n.attribute if a.name in _TYPE_ATTRS]
    types += [vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output)]
    found = [HALF_TYPES[t] for t in types if t in HALF_TYPES]
    return max(set(found), key=found.count) if found else None


def float32_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with half-precision initializers, Constant values, casts and declared tensor
    types raised to float32; tensor names are unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type in HALF_TYPES:
            graph.initializer[i].CopyFrom(_upcast(tensor))
    for node in iter_nodes(graph):
        for attr in node.attribute:
            if attr.name in _TYPE_ATTRS and attr.type == onnx.AttributeProto.INT and attr.i in HALF_TYPES:
                attr.i = onnx.TensorProto.FLOAT
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in HALF_TYPES:
                attr.t.CopyFrom(_upcast(attr.t))
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.tensor_type.elem_type in HALF_TYPES:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return out


def _upcast(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

