"""Checks of what methods promise: completeness/conservation gaps, and cost per image."""

from __future__ import annotations

import numpy as np

from onnxlens.evaluation.registry import metric

#: Explanation diagnostic → the promise it measures.
PROMISES = {"completeness_gap": "Σ attribution = f(x) − f(baseline) (Integrated Gradients)",
            "summation_gap": "Σ attribution = f(x) − f(x₀) (DeepLIFT)",
            "conservation_gap": "Σ input relevance = f(x) (LRP)"}


@metric("completeness", "checks", higher_is_better=False)
def completeness(ctx, e) -> dict:
    """The gap a method reports between Σ attribution and what it should equal, relative to
    the explained difference |f(x) − f(baseline)| (or |f(x)| for LRP) (Sundararajan et al., 2017; Shrikumar et al., 2017; Bach et al.,
    2015); NaN for methods that promise nothing of the kind."""
    for key, promise in PROMISES.items():
        gap = e.diagnostics.get(key)
        if gap is None:
            continue
        if isinstance(gap, dict):  # LRP: per tensor; the input's gap is the promise
            gap = gap[ctx.engine.input_name]
        base = e.diagnostics.get("baseline_score")
        scale = np.maximum(np.abs(e.score - (0.0 if base is None else base)), 1e-12)
        return {"per_image": np.asarray(gap, np.float64) / scale, "absolute": gap, "promise": promise}
    return {"per_image": np.full(len(ctx.x), np.nan), "promise": None}


@metric("cost", "checks", higher_is_better=False)
def cost(ctx, e) -> dict:
    """Wall time of the explanation per image (seconds), as the method recorded it."""
    total = e.timings.get("total")
    return {"per_image": np.full(len(ctx.x), np.nan if total is None else total / len(ctx.x))}
