"""MC dropout by graph surgery: Dropout as a multiplication by a keep-mask that is fed in, one
mask row per input row, so T stochastic passes are T copies of a row in one batch — seeded on
our side, differentiable by the backward compiler like any Mul, and exactly the deterministic
model when every mask is one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlens.errors import InputShapeError, quote
from onnxlens.graph_ops.index import replace_nodes

MASK_PREFIX = "mc_keep/"


@dataclass(frozen=True)
class DropoutSite:
    mask: str  #: the graph input fed with keep-masks (already divided by 1 − rate)
    tensor: str  #: the tensor dropped
    rate: float
    shape: tuple  #: the tensor's shape without the batch axis


def _ratio(model: onnx.ModelProto, node: onnx.NodeProto) -> float:
    if len(node.input) > 1 and node.input[1]:
        for init in model.graph.initializer:
            if init.name == node.input[1]:
                return float(numpy_helper.to_array(init))
        for other in model.graph.node:
            if other.op_type == "Constant" and other.output[0] == node.input[1]:
                return float(numpy_helper.to_array(other.attribute[0].t))
        raise InputShapeError(f"Dropout {quote(node.name)} has a ratio that is not a constant")
    return 0.5  # the operator's default


def _shape(model: onnx.ModelProto, tensor: str) -> tuple:
    infos = list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    for vi in infos:
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
            if len(shape) >= 1 and all(isinstance(d, int) for d in shape[1:]):
                return shape[1:]
    raise InputShapeError(f"the shape of {quote(tensor)} is not known; MC dropout needs it (per row, fixed)")


def with_dropout(model: onnx.ModelProto, before: tuple[str, ...] = (), rate: float | None = None
                 ) -> tuple[onnx.ModelProto, list[DropoutSite]]:
    """``model`` with its Dropout nodes — or, given ``before``, new dropout on those tensors —
    turned into ``Mul(tensor, keep-mask input)``. ``rate``: the drop probability (default: each
    Dropout's own ratio; 0.1 for inserted dropout). Returns the model and its dropout sites."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    sites = []
    if before:
        produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
        inserted = {}
        for tensor in before:
            if tensor not in produced:
                raise InputShapeError(f"the model has no tensor {quote(tensor)} to insert dropout before")
            site = DropoutSite(MASK_PREFIX + tensor, tensor, 0.1 if rate is None else rate, _shape(model, tensor))
            dropped = tensor + "/mc_dropout"
            for node in graph.node:
                for i, name in enumerate(node.input):
                    if name == tensor:
                        node.input[i] = dropped
            for o in graph.output:
                if o.name == tensor:
                    raise InputShapeError(f"{quote(tensor)} is a model output; dropout goes before inner tensors")
            inserted[tensor] = helper.make_node("Mul", [tensor, site.mask], [dropped], name=f"mc_dropout/{tensor}")
            sites.append(site)
        nodes = [inserted[i.name] for i in graph.input if i.name in inserted]
        for node in graph.node:  # each new Mul right after its tensor's producer: order stays topological
            nodes += [node] + [inserted[o] for o in node.output if o in inserted]
        replace_nodes(graph, nodes)
    else:
        for node in graph.node:
            if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
                site = DropoutSite(MASK_PREFIX + node.output[0], node.input[0],
                                   _ratio(model, node) if rate is None else rate, _shape(model, node.input[0]))
                node.op_type, node.name = "Mul", node.name or f"mc_dropout/{node.output[0]}"
                del node.input[1:]
                node.input.append(site.mask)
                del node.output[1:]
                del node.attribute[:]
                sites.append(site)
        if not sites:
            raise InputShapeError("the model has no Dropout node; name the tensors to insert dropout before")
    for site in sites:
        if not 0 <= site.rate < 1:
            raise InputShapeError(f"dropout rate must be in [0, 1), got {site.rate}")
        graph.input.append(helper.make_tensor_value_info(site.mask, onnx.TensorProto.FLOAT, ["batch", *site.shape]))
    return onnx.shape_inference.infer_shapes(out), sites  # the new tensors' types, for the backward compiler


def keep_masks(rng: np.random.Generator, sites: list[DropoutSite], rows: int) -> dict[str, np.ndarray]:
    """One inverted-dropout keep-mask per row and site: Bernoulli(1 − rate) / (1 − rate)."""
    return {s.mask: ((rng.random((rows, *s.shape)) >= s.rate) / (1 - s.rate)).astype(np.float32) for s in sites}
