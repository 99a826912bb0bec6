"""Complexity: how concentrated a map is (a map that marks everything explains nothing)."""

from __future__ import annotations

import numpy as np
from scipy.stats import entropy

from onnxlens.evaluation.maps import checked_heatmap
from onnxlens.evaluation.registry import metric


@metric("sparseness", "complexity", higher_is_better=True)
def sparseness(ctx, e) -> dict:
    """Sparseness (Chalasani et al., 2020, ICML, arXiv:1810.06583): the Gini index of |map|
    (0: uniform, → 1: one pixel), computed as Quantus does (|map| + 1e-7, sorted)."""
    values = np.sort(np.abs(checked_heatmap(ctx, e)).reshape(len(ctx.x), -1) + 1e-7, axis=1)
    n = values.shape[1]
    ranks = np.arange(1, n + 1)
    return {"per_image": ((2 * ranks - n - 1) * values).sum(axis=1) / (n * values.sum(axis=1))}


@metric("complexity", "complexity", higher_is_better=False)
def complexity(ctx, e) -> dict:
    """Complexity (Bhatt et al., 2020, IJCAI, arXiv:2005.00631): the Shannon entropy (nats) of
    each pixel's fractional contribution |map|ᵢ / Σ|map|; log(H·W) for a uniform map."""
    values = np.abs(checked_heatmap(ctx, e)).reshape(len(ctx.x), -1)
    return {"per_image": [entropy(row) if row.sum() > 0 else np.nan for row in values]}
