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
    counts = np.round(np.linspace(0, order.size, steps + 1)).astype(np.int64)
    return (rank[None, :] < counts[:, None]).reshape(steps + 1, *shape)


def substrate(engine, x: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """:func:`onnxlens.methods.scoring.substrate`; an unknown kind is a MetricError."""
    if kind not in SUBSTRATES:
        raise MetricError(f"unknown substrate {quote(kind)}; choose one of {', '.join(SUBSTRATES)}")
    return scoring.substrate(engine, x, kind, seed)


def normalized_auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled evenly on [0, 1] (last axis), by the trapezoid rule."""
    return trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), axis=-1)
