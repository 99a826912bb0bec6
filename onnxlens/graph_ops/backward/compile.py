"""Build the forward + backward model a gradient method runs: canonicalize for
differentiation, pick the score tensor, append the VJP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from onnxlens.graph_ops.backward.overrides import RuleSet
from onnxlens.graph_ops.backward.traversal import VjpModel, append_vjp
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.model_spec import ModelSpec
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
) -> GradientModel:
    """The gradient of the ``score`` (logit or probability) of ``output`` w.r.t. the image input
    and/or inner tensors ``wrt`` of a prepared model (:func:`prepare_for_differentiation`);
    ``exposed`` inner tensors are returned by the same run, and for ``totals`` tensors the
    per-row sums of their cotangents. Dequantized constants of an int8 graph are folded into
    float weights first (forward-only runs keep the graph as deployed)."""
    name = score_tensor(spec, output, score)
    targets = tuple(wrt) if wrt else (spec.image_input.name,)
    model = fold_dequantized_constants(model)[0]
    vjp = append_vjp(expose(model, [name, *exposed]), [name], targets, rules, totals)
    return GradientModel(vjp, name, targets)
