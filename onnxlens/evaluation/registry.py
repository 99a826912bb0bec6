"""Metrics by snake_case name, all with one signature: ``fn(ctx, explanation, **params) -> dict``.

A metric returns at least ``per_image`` (one value per input); the registry adds the mean, the
parameters it ran with, its direction and its wall time, so every result is self-describing and
JSON-ready.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from onnxlens.bundle import FAMILIES
from onnxlens.errors import OnnxLensError, quote
from onnxlens.files import jsonable
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import METHODS, coerce_params, run_method
from onnxlens.methods.targets import Target, detection_engine, nms_nodes, tile_rows



class MetricError(OnnxLensError):
    """An unknown metric or parameter, or inputs a metric cannot use (e.g. no masks)."""


@dataclass
class EvalContext:
    """What every metric may read: the engine, the batch it explains, the ground truth."""

    engine: object  #: onnxlens.runtime.engine.Engine
    x: np.ndarray
    masks: np.ndarray | None = None  #: N×H×W booleans (object regions), or None
    seed: int = 0
    cache: dict = field(default_factory=dict)  #: values shared between metrics (e.g. clean scores)

    def require_masks(self, metric: str) -> np.ndarray:
        if self.masks is None:
            raise MetricError(f"metric {quote(metric)} needs ground-truth masks or boxes")
        return self.masks


@dataclass(frozen=True)
class MetricInfo:
    name: str
    fn: Callable[..., dict]
    family: str
    defaults: dict
    higher_is_better: bool | None
    needs_masks: bool
    summary: str
    #: it attacks or re-explains for a class of a class-score vector (not a region or a sequence)
    class_vector: bool = False


METRICS: dict[str, MetricInfo] = {}


def metric(name: str, family: str, *, higher_is_better: bool | None, needs_masks: bool = False,
           class_vector: bool = False):
    """Register ``fn(ctx, explanation, *, params…) -> {"per_image": …, …}`` under ``name``."""
    if family not in FAMILIES:
        raise ValueError(family)

    def register(fn):
        params = list(inspect.signature(fn).parameters.values())[2:]
        # the first paragraph, as plain text
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].replace("``", "").split())
        METRICS[name] = MetricInfo(name, fn, family, {p.name: p.default for p in params}, higher_is_better,
                                   needs_masks, summary, class_vector)
        return fn

    return register


def scored(e: Explanation) -> np.ndarray:
    """What faithfulness metrics score for ``e``: its target's weights (region and sequence
    targets), else its class per row."""
    return e.target if e.weights is None else e.weights


def explain_again(ctx: EvalContext, e: Explanation, x: np.ndarray | None = None, target=None, engine=None,
                  copies: int = 1):
    """Run ``e``'s method again with its parameters — on other inputs, for other targets or on
    another engine (a randomized model) — for metrics that perturb and re-explain. Without a
    ``target``, ``e``'s own (its classes, or its weights: the same region or decoded path), for
    ``copies`` copies of the batch one after another."""
    info = METHODS.get(e.method)
    if info is None:
        raise MetricError(f"{quote(e.method)} is not a registered method, so it cannot be re-run "
                          "(robustness and sanity metrics re-explain)")
    params = {k: v for k, v in e.params.items() if k in info.defaults}
    if target is None:
        classes = tile_rows(e.target, copies)
        target = classes if e.weights is None else Target(classes, weights=tile_rows(e.weights, copies))
    return run_method(e.method, engine or ctx.engine, ctx.x if x is None else x, target, **params)


def metric_info(name: str) -> MetricInfo:
    if name not in METRICS:
        raise MetricError(f"unknown metric {quote(name)}; available: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def run_metric(name: str, ctx: EvalContext, explanation: Explanation, **params) -> dict:
    """One metric on one explanation of the batch, as a JSON-ready dict."""
    info = metric_info(name)
    params = coerce_params(info, params, "metric", MetricError)
    spec = explanation.params.get("target")
    target = Target.parse(spec) if spec else Target()
    if explanation.weights is not None and info.class_vector:
        raise MetricError(f"metric {quote(name)} works on a class of a class-score vector; the explanation's "
                          f"target is {quote(spec) if spec else 'a class of a dense map or a sequence'}")
    if target.match is not None and not nms_nodes(ctx.engine):
        raise MetricError(f"metric {quote(name)} scores one output for the batch; the explanation's rows matched "
                          f"boxes of their own ({quote(spec)}): evaluate one box with box=I")
    if spec and explanation.weights is None and not (target.detection or target.match is not None):
        raise MetricError(f"metric {quote(name)} needs the weights of the explanation's target {quote(spec)}, "
                          "which it does not carry")
    if explanation.params.get("output"):
        ctx = replace(ctx, engine=ctx.engine.with_output(explanation.params["output"]))
    if target.detection or target.match is not None:  # the box's class scores, the output its method explained
        ctx = replace(ctx, engine=detection_engine(ctx.engine, target, ctx.x)[0])
    start = time.perf_counter()
    result = info.fn(ctx, explanation, **params)
    per_image = np.asarray(result.pop("per_image"), dtype=np.float64)
    finite = per_image[np.isfinite(per_image)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "per_image": [None if not np.isfinite(v) else float(v) for v in per_image],
        "higher_is_better": result.pop("higher_is_better", info.higher_is_better),
        "params": jsonable({**info.defaults, **params}),
        "seconds": time.perf_counter() - start,
        **jsonable(result),
    }
