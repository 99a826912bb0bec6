"""Heatmaps as the metrics read them: checked against the input, scaled, thresholded; ground
truth boxes as masks."""

from __future__ import annotations

import numpy as np

from onnxlens.evaluation.registry import MetricError
from onnxlens.scaling import unit_scale


def checked_heatmap(ctx, explanation) -> np.ndarray:
    """The explanation's N×H×W heatmap (float64), or an error when it does not cover the input."""
    heatmap = np.asarray(explanation.heatmap, dtype=np.float64)
    expected = (len(ctx.x), *ctx.engine.spatial_size(ctx.x))
    if heatmap.shape != expected:
        raise MetricError(f"{explanation.method} heatmap has shape {heatmap.shape}; the inputs need {expected}")
    if not np.isfinite(heatmap).all():
        raise MetricError(f"{explanation.method} heatmap holds NaN or infinite values")
    return heatmap


def unit_scaled(maps: np.ndarray) -> np.ndarray:
    """Each map min–max scaled to [0, 1] (a constant map becomes zeros)."""
    return unit_scale(maps, rows=True)


def top_fraction(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Booleans marking each map's top ``fraction`` of pixels (ties broken in raster order)."""
    if not 0 < fraction <= 1:
        raise MetricError(f"the threshold fraction must be in (0, 1], got {fraction}")
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return top_k(maps, np.full(len(maps), k))


def top_k(maps: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Booleans marking map i's ``k[i]`` highest pixels (ties broken in raster order)."""
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    out = np.zeros(flat.shape, bool)
    for i, (row, count) in enumerate(zip(order, k)):
        out[i, row[:int(count)]] = True
    return out.reshape(maps.shape)


def boxes_to_masks(boxes, count: int, size: tuple[int, int]) -> np.ndarray:
    """Per-image lists of (x0, y0, x1, y1) pixel boxes (x1, y1 exclusive) as N×H×W masks."""
    if len(boxes) != count:
        raise MetricError(f"got boxes for {len(boxes)} images, expected {count}")
    masks = np.zeros((count, *size), bool)
    for i, image_boxes in enumerate(boxes):
        for box in np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4):
            x0, y0, x1, y1 = box
            if not (0 <= x0 < x1 <= size[1] and 0 <= y0 < y1 <= size[0]):
                raise MetricError(f"box {box.tolist()} of image {i} does not fit a {size[1]}×{size[0]} input")
            masks[i, int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    return masks
