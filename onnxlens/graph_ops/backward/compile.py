"""Build the forward + backward model a gradient method runs: canonicalize for
differentiation, pick the score tensor, append the VJP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import onnx
from onnx import helper

from onnxlens.graph_ops.backward.overrides import RuleSet
from onnxlens.graph_ops.backward.traversal import VjpModel, append_vjp, seed_name
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.model_spec import ModelSpec
from onnxlens.graph_ops.tensors import RESERVED_PREFIX
from onnxlens.graph_ops.simplify import (
    drop_noops, fold_batchnorm, fold_dequantized_constants, fuse_matmul_add, score_tensor,
)


@dataclass(frozen=True)
class GradientModel:
    vjp: VjpModel
    score: str  #: the explained tensor (a graph output of ``vjp.model``)
    wrt: tuple[str, ...]


def prepare_for_differentiation(model: onnx.ModelProto) -> onnx.ModelProto:
    """No-op nodes dropped, dense MatMul + Add fused into Gemm and BatchNorm folded into the
    layer before it: the graph every method runs, so inner tensor names are those of this form."""
    return fold_batchnorm(fuse_matmul_add(drop_noops(model)[0])[0])[0]


def gradient_model(
    model: onnx.ModelProto,
    spec: ModelSpec,
    *,
    output: str | None = None,
    score: str = "logit",
    wrt: Sequence[str] | None = None,
    rules: RuleSet | None = None,
    exposed: Sequence[str] = (),
    totals: Sequence[str] = (),
    predicted: bool = False,
) -> GradientModel:
    """The gradient of the ``score`` (logit or probability) of ``output`` w.r.t. the image input
    and/or inner tensors ``wrt`` of a prepared model (:func:`prepare_for_differentiation`);
    ``exposed`` inner tensors are returned by the same run, and for ``totals`` tensors the
    per-row sums of their cotangents. Dequantized constants of an int8 graph are folded into
    float weights first (forward-only runs keep the graph as deployed). ``predicted``: the seed
    is each row's top class, chosen in the graph (:func:`seed_from_prediction`)."""
    name = score_tensor(spec, output, score)
    targets = tuple(wrt) if wrt else (spec.image_input.name,)
    model = fold_dequantized_constants(model)[0]
    vjp = append_vjp(expose(model, [name, *exposed]), [name], targets, rules, totals)
    if predicted:
        vjp = replace(vjp, model=seed_from_prediction(vjp.model, name))
    return GradientModel(vjp, name, targets)


#: the output of a graph seeded by its prediction: each row's top class
PREDICTED_OUTPUT = f"{RESERVED_PREFIX}predicted"


def seed_from_prediction(model: onnx.ModelProto, score: str) -> onnx.ModelProto:
    """The VJP graph with its seed input for the class-score tensor ``score`` [N, C] replaced
    by ArgMax → OneHot of that tensor — the predicted class, chosen in the same run as the
    gradient (no forward pass first) — and the class per row as output :data:`PREDICTED_OUTPUT`."""
    graph = model.graph
    seed = next(i for i in graph.input if i.name == seed_name(score))
    dims = seed.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise ValueError(f"the score tensor {score!r} is not one vector of a known number of classes per row")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    graph.input.remove(next(i for i in graph.input if i.name == seed.name))
    elem = seed.type.tensor_type.elem_type
    graph.initializer.extend([
        helper.make_tensor(f"{PREDICTED_OUTPUT}/depth", onnx.TensorProto.INT64, [], [dims[1].dim_value]),
        helper.make_tensor(f"{PREDICTED_OUTPUT}/values", elem, [2], [0, 1])])
    graph.node.insert(0, helper.make_node("ArgMax", [score], [PREDICTED_OUTPUT], axis=1, keepdims=0))
    graph.node.insert(1, helper.make_node("OneHot", [PREDICTED_OUTPUT, f"{PREDICTED_OUTPUT}/depth",
                                                     f"{PREDICTED_OUTPUT}/values"], [seed.name], axis=-1))
    graph.output.append(helper.make_tensor_value_info(PREDICTED_OUTPUT, onnx.TensorProto.INT64, [dims[0].dim_param
                                                                                              or dims[0].dim_value]))
    return out
