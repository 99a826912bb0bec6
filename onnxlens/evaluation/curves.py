"""Perturbation curves (deletion, insertion, pixel flipping): the explained score along the
path that moves an image's most (or least) salient pixels from a start image to an end image,
sampled on an even grid of the moved fraction — a fixed step count, or a grid refined per image
until its area is stable to a stated tolerance.

The first and last points (nothing moved: the start image; everything moved: the end image) do
not depend on the map, so they are scored once for every map of the batch; a whole curve is
shared by metrics that ask for the same one (deletion and MoRF pixel flipping with one
substrate).
"""

from __future__ import annotations

import numpy as np

from onnxlens.evaluation.maps import checked_heatmap
from onnxlens.evaluation.perturbation import normalized_auc, on_finest_grid, order_by_saliency, step_masks
from onnxlens.evaluation.registry import MetricError, scored
from onnxlens.methods.scoring import pixel_mask, scores_of_variants

#: the grid an adaptive curve starts from; each refinement doubles it (the old points stay)
FIRST_GRID = 8


def grid_params(steps: int, tolerance: float, max_steps: int) -> None:
    """A clear error for a step count, tolerance or cap a curve cannot use."""
    if steps < 0:
        raise MetricError(f"steps must be positive, or 0 to refine the grid to the tolerance; got {steps}")
    if not steps and not 0 < tolerance < 1:
        raise MetricError(f"tolerance must lie strictly between 0 and 1 (an area on [0, 1]), got {tolerance:g}")
    if not steps and max_steps < 1:
        raise MetricError(f"max_steps must be at least 1, got {max_steps}")


def curves(ctx, e, start: tuple, end: tuple, *, steps: int, tolerance: float, max_steps: int, score: str,
           most_relevant_first: bool = True, patch: int = 1) -> dict:
    """Scores along the path that moves the top-k pixels (or patch×patch regions) of ``e``'s
    saliency order from ``start`` to ``end`` — each ``(key, images)``, the key naming the
    images for sharing. ``steps`` > 0: that many even steps. ``steps`` 0: from
    :data:`FIRST_GRID` steps, an image's grid doubles (reusing its points) until the area
    moves by at most ``tolerance``, up to ``max_steps``. Returns ``per_image`` (areas),
    ``curves`` (on the finest grid used, linearly interpolated), ``curve`` (their mean),
    ``steps`` (per image) and ``step_error`` (per image: the area's last change; None for a
    fixed grid)."""
    key = ("curves", ctx.engine.key, ctx.engine.output, start[0], end[0], steps, tolerance, max_steps, score,
           most_relevant_first, patch)
    cached = ctx.cache.get(key)
    if cached is not None and cached[0] is e:
        return dict(cached[1])
    grid_params(steps, tolerance, max_steps)
    engine, target = ctx.engine, scored(e)
    heatmap = checked_heatmap(ctx, e)
    orders = [_order(h, most_relevant_first, patch) for h in heatmap]
    first, last = (ctx.scores(k, images, target, score) for k, images in (start, end))

    def inner(rows: np.ndarray, n: int, indices: slice) -> np.ndarray:
        """Scores of rows' copies at the ``indices`` of the n-step grid."""
        def variants(j):
            i = rows[j]
            masks = _masks(orders[i], heatmap.shape[1:], n, patch)[indices]
            return np.where(pixel_mask(engine, masks), end[1][i], start[1][i])

        return scores_of_variants(engine, len(rows), variants, target[rows], score)

    n_images, size = len(heatmap), orders[0].size  # pixels, or regions, to move
    n = min(steps, size) if steps else min(FIRST_GRID, max_steps, size)
    values = list(np.column_stack([first, inner(np.arange(n_images), n, slice(1, n)), last]))
    used, change = np.full(n_images, n), np.full(n_images, np.nan)
    if not steps:
        active = np.arange(n_images)
        while active.size and 2 * n <= min(max_steps, size):
            area = normalized_auc(np.stack([values[i] for i in active]))
            odd = inner(active, 2 * n, slice(1, 2 * n, 2))
            for j, i in enumerate(active):
                finer = np.empty(2 * n + 1)
                finer[0::2], finer[1::2] = values[i], odd[j]
                values[i] = finer
            n *= 2
            used[active] = n
            change[active] = np.abs(normalized_auc(np.stack([values[i] for i in active])) - area)
            active = active[change[active] > tolerance]
    grid = np.array(on_finest_grid([v.tolist() for v in values]))
    result = {"per_image": np.array([normalized_auc(v) for v in values]), "curve": grid.mean(axis=0),
              "curves": grid, "steps": used, "step_error": None if steps else change}
    ctx.cache[key] = (e, result)
    return dict(result)


def _order(heatmap: np.ndarray, most_relevant_first: bool, patch: int) -> np.ndarray:
    """The saliency order of pixels, or of patch×patch regions ranked by their summed saliency."""
    if patch == 1:
        return order_by_saliency(heatmap, most_relevant_first)
    h, w = heatmap.shape
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.zeros((rows * patch, cols * patch))
    padded[:h, :w] = heatmap
    return order_by_saliency(padded.reshape(rows, patch, cols, patch).sum(axis=(1, 3)), most_relevant_first)


def _masks(order: np.ndarray, shape: tuple, steps: int, patch: int) -> np.ndarray:
    """(steps + 1, H, W): the pixels moved at each point of the grid."""
    if patch == 1:
        return step_masks(order, shape, steps)
    h, w = shape
    regions = (-(-h // patch), -(-w // patch))
    coarse = step_masks(order, regions, steps)
    return coarse.repeat(patch, axis=1).repeat(patch, axis=2)[:, :h, :w]
