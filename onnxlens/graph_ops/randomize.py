"""Model-parameter randomization for sanity checks (Adebayo et al., 2018, arXiv:1810.03292):
the learnable weights of chosen layers redrawn, by graph surgery on the ONNX initializers and
Constant nodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxlens.graph_ops.index import graph_index
from onnxlens.graph_ops.tensors import constant_arrays

#: Op type → indices of the inputs that are learnable parameters.
PARAMETER_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "PRelu": (1,),
                    "BatchNormalization": (1, 2)}  # scale and shift; never the running statistics


@dataclass(frozen=True)
class ParameterLayer:
    name: str  #: the node name (or its first output when unnamed)
    parameters: tuple[str, ...]  #: constant tensors randomized together


def parameter_layers(model: onnx.ModelProto) -> list[ParameterLayer]:
    """Layers with learnable constants, from the output to the input (the cascade's order). A
    BatchNormalization right after a convolution or dense layer belongs to that layer."""
    graph = model.graph
    consts = constant_arrays(graph)
    producers = graph_index(graph).producers
    layers: list[tuple[onnx.NodeProto, list[str]]] = []
    owner: dict[str, int] = {}
    for node in graph.node:
        params = [node.input[i] for i in PARAMETER_INPUTS.get(node.op_type, ())
                  if i < len(node.input) and node.input[i] in consts and consts[node.input[i]].dtype.kind == "f"]
        if node.op_type == "MatMul" and node.input[0] in consts:
            params = []
        if not params:
            continue
        producer = producers.get(node.input[0])
        if node.op_type == "BatchNormalization" and producer is not None and producer.output[0] in owner:
            layers[owner[producer.output[0]]][1].extend(params)
            continue
        owner[node.output[0]] = len(layers)
        layers.append((node, params))
    return [ParameterLayer(node.name or node.output[0], tuple(dict.fromkeys(params))) for node, params in reversed(layers)]


def randomize(model: onnx.ModelProto, parameters, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose ``parameters`` (tensor names) are redrawn from a normal
    distribution with each tensor's own standard deviation around zero (BatchNorm scales around
    their mean, so a layer keeps its scale of activity and never divides by a bad variance);
    tensors with zero spread stay."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    wanted = set(parameters)
    centred = _batchnorm_scales(out.graph)
    for tensor in _constant_tensors(out.graph):
        if tensor.name not in wanted:
            continue
        value = numpy_helper.to_array(tensor)
        spread = float(value.std())
        if spread == 0 or value.size < 2:
            continue
        centre = float(value.mean()) if tensor.name in centred else 0.0
        fresh = rng.normal(centre, spread, value.shape).astype(value.dtype)
        tensor.CopyFrom(numpy_helper.from_array(fresh, tensor.name))
    return out


def _batchnorm_scales(graph) -> set[str]:
    return {n.input[1] for n in graph.node if n.op_type == "BatchNormalization" and len(n.input) > 1}


def _constant_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    yield attr.t
