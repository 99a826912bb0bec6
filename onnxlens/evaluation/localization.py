"""Localization: does the map point at the object? Every metric reads the ground-truth masks
(N×H×W booleans; boxes are turned into masks) and ``explanation.heatmap``; images whose mask
is empty give no value."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from onnxlens.evaluation.maps import checked_heatmap, top_k, unit_scaled
from onnxlens.evaluation.registry import MetricError, metric


def _masked(ctx, e, name):
    masks = ctx.require_masks(name)
    heatmap = checked_heatmap(ctx, e)
    if masks.shape != heatmap.shape:
        raise MetricError(f"masks have shape {masks.shape}; the heatmaps {heatmap.shape}")
    return heatmap, masks, masks.reshape(len(masks), -1).any(axis=1)


@metric("pointing_game", "localization", higher_is_better=True, needs_masks=True)
def pointing_game(ctx, e, *, tolerance: int = 15) -> dict:
    """Pointing game (Zhang et al., 2018, IJCV 126:1084): a hit when the map's maximum lies on
    the object — within ``tolerance`` pixels of it (the paper's 15 px) for ``per_image``,
    exactly on it for ``per_image_strict`` (Quantus's PointingGame: any tied maximum counts)."""
    heatmap, masks, valid = _masked(ctx, e, "pointing_game")
    hits, strict = np.full(len(masks), np.nan), np.full(len(masks), np.nan)
    for i in np.nonzero(valid)[0]:
        peaks = heatmap[i] == heatmap[i].max()
        strict[i] = float((peaks & masks[i]).any())
        near = ndimage.distance_transform_edt(~masks[i]) <= tolerance
        hits[i] = float((peaks & near).any())
    return {"per_image": hits, "per_image_strict": strict}


@metric("iou", "localization", higher_is_better=True, needs_masks=True)
def iou(ctx, e, *, threshold: str = "area") -> dict:
    """Intersection over union of the thresholded map and the mask. ``threshold="area"``: the
    map's top pixels, as many as the mask has; a number t in (0, 1): pixels ≥ t after min–max
    scaling (CAM's localization used 0.2 of the maximum)."""
    heatmap, masks, valid = _masked(ctx, e, "iou")
    if threshold == "area":
        chosen = top_k(heatmap, masks.reshape(len(masks), -1).sum(axis=1))
    else:
        try:
            t = float(threshold)
        except ValueError:
            raise MetricError(f"threshold must be 'area' or a number in (0, 1), got {threshold!r}") from None
        chosen = unit_scaled(heatmap) >= t
    inter = (chosen & masks).reshape(len(masks), -1).sum(axis=1)
    union = (chosen | masks).reshape(len(masks), -1).sum(axis=1)
    return {"per_image": np.where(valid, inter / np.maximum(union, 1), np.nan)}


@metric("relevance_mass", "localization", higher_is_better=True, needs_masks=True)
def relevance_mass(ctx, e, *, positive_only: bool = True) -> dict:
    """Relevance mass accuracy (Arras et al., 2022, Inf. Fusion 81:14): the share of the map's
    positive relevance inside the mask (``positive_only=false``: of the signed sum, as
    Quantus's RelevanceMassAccuracy)."""
    heatmap, masks, valid = _masked(ctx, e, "relevance_mass")
    values = np.maximum(heatmap, 0) if positive_only else heatmap
    inside = (values * masks).reshape(len(masks), -1).sum(axis=1)
    total = values.reshape(len(masks), -1).sum(axis=1)
    return {"per_image": np.where(valid & (total != 0), inside / np.where(total != 0, total, 1), np.nan)}


@metric("relevance_rank", "localization", higher_is_better=True, needs_masks=True)
def relevance_rank(ctx, e) -> dict:
    """Relevance rank accuracy (Arras et al., 2022): with K the mask's size, the share of the
    map's K highest pixels that lie inside the mask."""
    heatmap, masks, valid = _masked(ctx, e, "relevance_rank")
    sizes = masks.reshape(len(masks), -1).sum(axis=1)
    inside = (top_k(heatmap, sizes) & masks).reshape(len(masks), -1).sum(axis=1)
    return {"per_image": np.where(valid, inside / np.maximum(sizes, 1), np.nan)}


@metric("top_k_intersection", "localization", higher_is_better=True, needs_masks=True)
def top_k_intersection(ctx, e, *, k: int = 1000) -> dict:
    """Top-k intersection (Theiner et al., 2022, arXiv:2108.13567): the share of the map's
    ``k`` highest pixels inside the mask (Quantus's default k = 1000)."""
    heatmap, masks, valid = _masked(ctx, e, "top_k_intersection")
    if not 0 < k <= heatmap[0].size:
        raise MetricError(f"k must be between 1 and {heatmap[0].size} (the pixel count), got {k}")
    inside = (top_k(heatmap, np.full(len(masks), k)) & masks).reshape(len(masks), -1).sum(axis=1)
    return {"per_image": np.where(valid, inside / k, np.nan)}
