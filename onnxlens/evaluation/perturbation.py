"""What perturbation metrics share: saliency orderings, substrates and masks (the scores of
perturbed copies and the blur come from ``onnxlens.methods.scoring``)."""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid

from onnxlens.errors import quote
from onnxlens.evaluation.registry import MetricError
from onnxlens.methods import scoring
from onnxlens.methods.scoring import SUBSTRATES


def order_by_saliency(heatmap: np.ndarray, most_relevant_first: bool = True) -> np.ndarray:
    """Pixel indices (flattened H×W) from the most (or least) salient; ties keep raster order."""
    flat = heatmap.reshape(-1).astype(np.float64)
    return np.argsort(-flat if most_relevant_first else flat, kind="stable")


def step_masks(order: np.ndarray, shape: tuple, steps: int) -> np.ndarray:
    """(steps + 1, H, W) booleans: mask k covers the first round(k·n/steps) pixels of ``order``."""
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return (rank[None, :] < step_counts(order.size, steps)[:, None]).reshape(steps + 1, *shape)


def step_counts(size: int, steps: int) -> np.ndarray:
    """Pixels covered at each of the ``steps`` + 1 points, round(k·size/steps): grid 2n holds
    grid n's points at its even indices, exactly."""
    return np.round(np.arange(steps + 1) * size / steps).astype(np.int64)


def substrate(ctx, kind: str) -> np.ndarray:
    """:func:`onnxlens.methods.scoring.substrate` of the context's batch, built once for all
    its metrics; an unknown kind is a MetricError."""
    if kind not in SUBSTRATES:
        raise MetricError(f"unknown substrate {quote(kind)}; choose one of {', '.join(SUBSTRATES)}")
    return ctx.shared(("substrate", kind), lambda: scoring.substrate(ctx.engine, ctx.x, kind, ctx.seed))


def normalized_auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled evenly on [0, 1] (last axis), by the trapezoid rule."""
    return trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), axis=-1)


def on_finest_grid(curves: list) -> list:
    """Curves sampled evenly on [0, 1] at different step counts, each linearly interpolated to
    the most points among them (what the trapezoid rule integrates, so each area is kept); a
    None (an input not scored) stays None."""
    points = max((len(c) for c in curves if c is not None), default=0)
    if all(c is None or len(c) == points for c in curves):
        return curves
    grid = np.linspace(0, 1, points)
    return [None if c is None else np.interp(grid, np.linspace(0, 1, len(c)), np.array(c, np.float64)).tolist()
            for c in curves]
