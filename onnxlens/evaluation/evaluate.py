"""``evaluate``: run metrics over explanations of one batch, beside model-free baselines, into
one JSON-ready result."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onnxlens import __version__
from onnxlens.bundle import BASELINE_PREFIX
from onnxlens.errors import quote
from onnxlens.evaluation import agreement as agreement_measures
from onnxlens.evaluation.baselines import BASELINES, baseline_maps
from onnxlens.evaluation.maps import boxes_to_masks
from onnxlens.evaluation.registry import METRICS, EvalContext, MetricError, metric_info, run_metric
from onnxlens.files import jsonable
from onnxlens.methods.explanation import Explanation, spread_over_channels
from onnxlens.methods.registry import coerce_params, method_info, run_method
from onnxlens.methods.targets import nearest
from onnxlens.runtime.engine import Engine
from onnxlens.runtime.model_import import ImportedModel, import_model

SCHEMA = "onnxlens.evaluation/1"
#: What runs when no metric is named: one of each kind that needs no re-explaining (pixel
#: flipping's defaults repeat deletion; ROAD, robustness and sanity cost more and are asked for).
DEFAULT_METRICS = ("deletion", "insertion", "faithfulness_correlation", "infidelity",
                   "pointing_game", "iou", "relevance_mass", "relevance_rank", "top_k_intersection",
                   "sparseness", "complexity", "completeness", "cost")
#: Metric families that also score the model-free baselines, so each method is shown beside them.
BASELINE_FAMILIES = ("faithfulness", "localization")


def as_engine(model) -> Engine:
    """The Engine behind an Engine, an Explainer, an ImportedModel or a model path."""
    if isinstance(model, Engine):
        return model
    if hasattr(model, "engine") and isinstance(model.engine, Engine):  # an Explainer
        return model.engine
    if isinstance(model, (ImportedModel, str, bytes, os.PathLike)):
        return Engine(model if isinstance(model, ImportedModel) else import_model(model))
    raise MetricError(f"cannot evaluate a {type(model).__name__}; pass an Engine, Explainer, ImportedModel or path")


def route_params(by_name: Mapping[str, dict], methods: Sequence[str], metrics: Sequence[str] | None = None
                 ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Parameters given per name (``NAME.key=value`` on the command line) split between the
    chosen ``methods`` and ``metrics`` (None: the default metrics; empty: methods only), each
    checked and coerced to its defaults' types: ``(method params, metric params)``."""
    for name in methods:
        method_info(name)
    for name in metrics or ():
        metric_info(name)
    chosen_metrics = DEFAULT_METRICS if metrics is None else tuple(metrics)
    method_params, metric_params = {}, {}
    for name, values in by_name.items():
        if name in methods:
            method_params[name] = coerce_params(method_info(name), values)
        elif name in chosen_metrics:
            metric_params[name] = coerce_params(metric_info(name), values, "metric", MetricError)
        else:
            what = "neither a chosen method nor a chosen metric" if chosen_metrics else "not a chosen method"
            raise MetricError(f"parameters given for {quote(name)}, which is {what}")
    return method_params, metric_params


def _explanations(engine, x, explanations, target) -> dict[str, Explanation]:
    """Name → Explanation: given ones keep their method name (numbered when repeated); names
    of methods are run with their defaults."""
    if isinstance(explanations, (Explanation, str)):
        explanations = [explanations]
    items = explanations.items() if isinstance(explanations, Mapping) else [(None, e) for e in explanations]
    out: dict[str, Explanation] = {}
    for name, e in items:
        if isinstance(e, str):
            e = run_method(e, engine, x, target)
        if not isinstance(e, Explanation):
            raise MetricError(f"explanations must be Explanation objects or method names, got {type(e).__name__}")
        if len(e.attribution) != len(x):
            raise MetricError(f"the {e.method} explanation covers {len(e.attribution)} inputs, not {len(x)}")
        key = name or e.method
        count = 2
        while key in out:
            key, count = f"{name or e.method}#{count}", count + 1
        out[key] = e
    if not out:
        raise MetricError("nothing to evaluate: give at least one explanation or method name")
    return out


def _target_region(engine, x, e: Explanation) -> np.ndarray | None:
    """The input pixels of ``e``'s region target (a region, box or predicted pixels of a dense
    map, resized to the input nearest), or None for any other target."""
    if e.weights is None or e.weights.ndim != 4 or not e.params.get("target"):
        return None
    return nearest(np.abs(e.weights).sum(axis=engine.channel_axis) > 0, engine.spatial_size(x))


def _masks(engine, x, masks, boxes):
    size = engine.spatial_size()
    if masks is not None and boxes is not None:
        raise MetricError("give masks or boxes, not both")
    if boxes is not None:
        return boxes_to_masks(boxes, len(x), size)
    if masks is None:
        return None
    masks = np.asarray(masks)
    if masks.shape != (len(x), *size):
        raise MetricError(f"masks have shape {masks.shape}; expected {(len(x), *size)} (one H×W mask per input)")
    return masks.astype(bool)


def _baseline_explanations(engine, x, names, explained: Explanation) -> dict[str, Explanation]:
    """Model-free maps as explanations of the target ``explained`` has (which faithfulness
    metrics score); the attribution spreads each map evenly over the channels."""
    maps = baseline_maps(x, engine.spec.image_input.layout, names)
    target = {k: explained.params[k] for k in ("output", "target") if k in explained.params}
    return {f"{BASELINE_PREFIX}{name}": Explanation(spread_over_channels(m, x, engine.channel_axis), m,
                                                    explained.target, np.zeros(len(x)), name, params=dict(target),
                                                    weights=explained.weights)
            for name, m in maps.items()}


def evaluate(
    model,
    inputs: np.ndarray,
    explanations,
    metrics: Sequence[str] | None = None,
    masks: np.ndarray | None = None,
    boxes: Sequence | None = None,
    *,
    params: Mapping[str, Mapping] | None = None,
    baselines: Sequence[str] = tuple(BASELINES),
    reference: np.ndarray | None = None,
    target=None,
    seed: int = 0,
    baseline_rows: Sequence[int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Evaluate explanations of ``inputs`` (a batch shaped for the model).

    ``explanations``: Explanation objects (a list, or a dict name → Explanation) or method names
    (run with their defaults for ``target``). ``progress(label, done, total)`` is called before
    each metric run. ``metrics``: names (default: ``DEFAULT_METRICS``,
    minus those needing masks when none are given). ``masks`` (N×H×W) or ``boxes`` (per image,
    a list of (x0, y0, x1, y1)) are the ground truth of localization; ``params`` maps a metric
    to its parameters; ``reference`` (N×H×W, e.g. eye-tracking fixations) adds each map's
    agreement with it. Faithfulness and localization also score the model-free ``baselines``;
    a metric that runs the model on copies made from each map scores them on the inputs at
    ``baseline_rows`` only, when given (its results hold None for the rest, and ``images``
    says how many were scored). Agreement is measured between every pair of maps. Every result states its ``standard_error`` and ``forward_passes``. Returns plain
    dicts and lists (JSON-ready).
    """
    engine = as_engine(model)
    x = engine.check_input(inputs)
    truth = _masks(engine, x, masks, boxes)
    params = dict(params or {})
    for name in metrics or ():
        metric_info(name)
    explained = _explanations(engine, x, explanations, target)
    first = next(iter(explained.values()))
    if truth is None:  # a region target is its own ground truth
        truth = _target_region(engine, x, first)
    ctx = EvalContext(engine, x, truth, seed)
    chosen = list(metrics) if metrics else [m for m in DEFAULT_METRICS if ctx.masks is not None
                                            or not METRICS[m].needs_masks]
    for name in chosen:
        if metric_info(name).needs_masks and ctx.masks is None:
            raise MetricError(f"metric {quote(name)} needs masks or boxes (or a region target)")
    unknown = sorted(set(params) - set(chosen))
    if unknown:
        raise MetricError(f"parameters given for metric(s) not run: {', '.join(map(quote, unknown))}")
    model_free = _baseline_explanations(engine, x, baselines, first) if baselines else {}
    rows = None if baseline_rows is None else np.unique(np.asarray(baseline_rows, dtype=np.int64))
    if rows is not None and rows.size and not (0 <= rows[0] and rows[-1] < len(x)):
        raise MetricError(f"baseline_rows must index the {len(x)} inputs, got {rows[0] if rows[0] < 0 else rows[-1]}")
    on_rows = ctx if rows is None else EvalContext(engine, x[rows], None if truth is None else truth[rows], seed)

    subjects = {name: {**explained, **(model_free if metric_info(name).family in BASELINE_FAMILIES else {})}
                for name in chosen}
    total, done = sum(map(len, subjects.values())), 0
    results: dict[str, dict] = {}
    for name in chosen:
        info = metric_info(name)
        entry = {"family": info.family, "summary": info.summary, "results": {}}
        for label, e in subjects[name].items():
            if progress:
                progress(f"{name} · {label}", done, total)
            if label in model_free and rows is not None and info.passes_per_map:
                entry["results"][label] = _on_rows(name, on_rows, e, rows, len(x), params.get(name, {}))
            else:
                entry["results"][label] = run_metric(name, ctx, e, **params.get(name, {}))
            done += 1
        results[name] = entry

    maps = {label: e.heatmap for label, e in {**explained, **model_free}.items()}
    return {
        "schema": SCHEMA,
        "onnxlens_version": __version__,
        "model_sha256": engine.model.sha256,
        "n_images": len(x),
        "seed": seed,
        "targets": {label: jsonable(e.target) for label, e in explained.items()},
        "explanations": {label: {"method": e.method, "params": _plain_params(e.params)}
                         for label, e in explained.items()},
        "baselines": [f"{BASELINE_PREFIX}{b}" for b in baselines],
        "metrics": results,
        "agreement": _agreement(maps, list(explained), reference),
    }


def _on_rows(name: str, ctx: EvalContext, e: Explanation, rows: np.ndarray, n: int, params: dict) -> dict:
    """``run_metric`` on the inputs at ``rows`` only (``ctx`` holds them), its per-image lists
    widened to all ``n`` inputs with None for those not scored."""
    if not rows.size:
        info = metric_info(name)
        return {"mean": None, "standard_error": None, "per_image": [None] * n, "images": 0,
                "higher_is_better": info.higher_is_better, "params": jsonable({**info.defaults, **params}),
                "seconds": 0.0, "forward_passes": 0}
    result = run_metric(name, ctx, e.take(rows), **params)
    for key, value in result.items():
        if isinstance(value, list) and len(value) == rows.size:
            widened = [None] * n
            for r, v in zip(rows, value):
                widened[r] = v
            result[key] = widened
    return result


def _plain_params(p: dict) -> dict:
    return jsonable({k: ("<array>" if isinstance(v, np.ndarray) else v) for k, v in p.items()})


def _agreement(maps: dict[str, np.ndarray], explained: list[str], reference) -> dict:
    """Every explanation against every other map (explanations and baselines), and against the
    reference map when given."""
    pairs = {}
    for i, a in enumerate(explained):
        for b in [m for m in maps if m not in explained[: i + 1]]:
            pairs[f"{a} | {b}"] = _summarized(agreement_measures.compare(maps[a], maps[b]))
    if reference is not None:
        reference = np.asarray(reference)
        for label, m in maps.items():
            if reference.shape != m.shape:
                raise MetricError(f"reference maps have shape {reference.shape}; the heatmaps {m.shape}")
            pairs[f"reference | {label}"] = _summarized(agreement_measures.compare(reference, m))
    return {"measures": list(agreement_measures.MEASURES), "higher_is_closer": agreement_measures.HIGHER_IS_CLOSER,
            "pairs": pairs}


def _summarized(values: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, v in values.items():
        finite = v[np.isfinite(v)]
        out[name] = {"mean": float(finite.mean()) if finite.size else None, "per_image": jsonable(v)}
    return out
