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
from onnxlens.methods.scoring import class_score
from onnxlens.methods.targets import Target, detection_engine, nms_nodes, tile_rows
from onnxlens.runtime.engine import counting_rows


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

    def shared(self, key: tuple, build: Callable[[], object]) -> object:
        """``build()``, computed once per ``key`` and explained model output for all metrics
        of this context (metrics of another output or a detection box share the cache)."""
        key = (self.engine.key, self.engine.output, *key)
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def scores(self, key, images: np.ndarray, target: np.ndarray, score: str) -> np.ndarray:
        """The explained ``score`` of ``images`` (named by ``key``: "input" is ``x``) for
        ``target``, run once for all metrics and maps of this context."""
        return self.shared(("scores", key, score, np.asarray(target).tobytes()),
                           lambda: class_score(self.engine, images, target, score))

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
    #: it runs the model on copies made from each map, so its cost grows with the maps scored
    passes_per_map: bool = False


METRICS: dict[str, MetricInfo] = {}


def metric(name: str, family: str, *, higher_is_better: bool | None, needs_masks: bool = False,
           class_vector: bool = False, passes_per_map: bool = False):
    """Register ``fn(ctx, explanation, *, params…) -> {"per_image": …, …}`` under ``name``."""
    if family not in FAMILIES:
        raise ValueError(family)

    def register(fn):
        params = list(inspect.signature(fn).parameters.values())[2:]
        # the first paragraph, as plain text
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].replace("``", "").split())
        METRICS[name] = MetricInfo(name, fn, family, {p.name: p.default for p in params}, higher_is_better,
                                   needs_masks, summary, class_vector, passes_per_map)
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
    with counting_rows() as rows:
        result = info.fn(ctx, explanation, **params)
    per_image = np.asarray([np.nan if v is None else v for v in result.pop("per_image")], dtype=np.float64)
    return {
        "mean": mean_of(per_image),
        "standard_error": standard_error(per_image),
        "per_image": [None if not np.isfinite(v) else float(v) for v in per_image],
        "images": len(per_image),
        "higher_is_better": result.pop("higher_is_better", info.higher_is_better),
        "params": jsonable({**info.defaults, **params}),
        "seconds": time.perf_counter() - start,
        "forward_passes": rows[0],
        **jsonable(result),
    }


def mean_of(values) -> float | None:
    """The mean of the finite values (None and NaN are images not scored), or None."""
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else None


def standard_error(values) -> float | None:
    """The standard error of :func:`mean_of` as an estimate of the mean over the images'
    population: the sample standard deviation of the finite values over √count; None below two."""
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.std(ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else None
