"""Faithfulness: does removing what a map calls important change the model's output?

Orderings read ``explanation.heatmap`` (the method's own H×W map; most salient first); scores
are the class probability unless a metric says otherwise. Perturbed copies of every image are
scored in large batches through one compiled forward graph.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu
from scipy.stats import pearsonr

from onnxlens.evaluation.perturbation import (
    normalized_auc,
    order_by_saliency,
    step_masks,
    substrate,
)
from onnxlens.methods.scoring import blurred, class_score, pixel_mask, scores_of_variants
from onnxlens.evaluation.maps import checked_heatmap
from onnxlens.evaluation.registry import MetricError, metric, scored


def _curves(ctx, e, start, end, steps, score, most_relevant_first=True, patch=1):
    """Scores along the path that moves the top-k pixels (or patch×patch regions) of the
    saliency order from ``start`` to ``end``, for k = 0 … n in ``steps`` even steps."""
    engine = ctx.engine
    heatmap = checked_heatmap(ctx, e)

    def variants(i):
        masks = _region_masks(heatmap[i], steps, most_relevant_first, patch)
        return np.where(pixel_mask(engine, masks), end[i], start[i])

    return scores_of_variants(engine, len(ctx.x), variants, scored(e), score)


def _region_masks(heatmap, steps, most_relevant_first, patch):
    if patch == 1:
        return step_masks(order_by_saliency(heatmap, most_relevant_first), heatmap.shape, steps)
    h, w = heatmap.shape
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.zeros((rows * patch, cols * patch))
    padded[:h, :w] = heatmap
    regions = padded.reshape(rows, patch, cols, patch).sum(axis=(1, 3))
    coarse = step_masks(order_by_saliency(regions, most_relevant_first), regions.shape, min(steps, regions.size))
    return coarse.repeat(patch, axis=1).repeat(patch, axis=2)[:, :h, :w]


@metric("deletion", "faithfulness", higher_is_better=False)
def deletion(ctx, e, *, steps: int = 50, substrate_kind: str = "zero", score: str = "probability") -> dict:
    """Deletion (Petsiuk et al., 2018, arXiv:1806.07421, the RISE protocol): the most salient
    pixels are replaced, all channels at once, by the substrate (``zero`` — the mean of a
    normalized input — or each image's channel ``mean``) in ``steps`` equal steps; the
    class-probability curve's area over the removed fraction [0, 1]. Lower is better."""
    curves = _curves(ctx, e, ctx.x, substrate(ctx.engine, ctx.x, substrate_kind, ctx.seed), steps, score)
    return {"per_image": normalized_auc(curves), "curve": curves.mean(axis=0), "curves": curves}


@metric("insertion", "faithfulness", higher_is_better=True)
def insertion(ctx, e, *, steps: int = 50, blur_kernel: int = 11, blur_sigma: float = 5.0,
              score: str = "probability") -> dict:
    """Insertion (Petsiuk et al., 2018, the RISE protocol): starting from the image blurred
    with a ``blur_kernel``-wide Gaussian of σ ``blur_sigma``, the most salient pixels are put
    back in ``steps`` equal steps; the class-probability curve's area. Higher is better."""
    curves = _curves(ctx, e, blurred(ctx.engine, ctx.x, blur_sigma, blur_kernel), ctx.x, steps, score)
    return {"per_image": normalized_auc(curves), "curve": curves.mean(axis=0), "curves": curves}


ORDERS = ("morf", "lerf")


@metric("pixel_flipping", "faithfulness", higher_is_better=None)
def pixel_flipping(ctx, e, *, order: str = "morf", patch: int = 1, steps: int = 50, substrate_kind: str = "zero",
                   score: str = "probability") -> dict:
    """Pixel flipping (Bach et al., 2015, PLoS ONE 10(7)) and region perturbation (Samek et al.,
    2017, IEEE TNNLS 28(11)) with ``patch`` > 1: pixels or patch×patch regions (ranked by their
    summed saliency) are flipped to the substrate most relevant first (``morf``: a steep fall,
    lower area is better) or least relevant first (``lerf``: higher is better). Quantus's
    ``features_in_step`` = H·W / ``steps``, its ``perturb_baseline`` = ``substrate_kind``."""
    if order not in ORDERS:
        raise MetricError(f"order must be morf or lerf, got {order!r}")
    if patch < 1:
        raise MetricError(f"patch must be a positive pixel count, got {patch}")
    end = substrate(ctx.engine, ctx.x, substrate_kind, ctx.seed)
    curves = _curves(ctx, e, ctx.x, end, steps, score, most_relevant_first=order == "morf", patch=patch)
    return {"per_image": normalized_auc(curves), "curve": curves.mean(axis=0), "curves": curves,
            "higher_is_better": order == "lerf"}


@metric("faithfulness_correlation", "faithfulness", higher_is_better=True)
def faithfulness_correlation(ctx, e, *, subset_size: int = 224, runs: int = 100, substrate_kind: str = "zero",
                             score: str = "logit") -> dict:
    """Faithfulness correlation (Bhatt et al., 2020, IJCAI, arXiv:2005.00631): over ``runs``
    random subsets of ``subset_size`` pixels (seeded), the Pearson correlation between the
    saliency summed over the subset and the score drop when the subset is set to the substrate
    (defaults as Quantus: 224 pixels, 100 runs, black substrate, the logit)."""
    engine, x = ctx.engine, ctx.x
    heatmap = checked_heatmap(ctx, e)
    n_pixels = heatmap[0].size
    if not 0 < subset_size < n_pixels:
        raise MetricError(f"subset_size must be between 1 and {n_pixels - 1}, got {subset_size}")
    rng = np.random.default_rng(ctx.seed)
    subsets = np.zeros((len(x), runs, n_pixels), bool)
    for i in range(len(x)):
        for r in range(runs):
            subsets[i, r, rng.choice(n_pixels, subset_size, replace=False)] = True
    subsets = subsets.reshape(len(x), runs, *heatmap.shape[1:])
    end = substrate(engine, x, substrate_kind, ctx.seed)
    drops = class_score(engine, x, scored(e), score)[:, None] - scores_of_variants(
        engine, len(x), lambda i: np.where(pixel_mask(engine, subsets[i]), end[i], x[i]), scored(e), score)
    sums = (subsets * heatmap[:, None]).sum(axis=(2, 3))
    values = [pearsonr(s, d)[0] if np.std(s) > 0 and np.std(d) > 0 else np.nan for s, d in zip(sums, drops)]
    return {"per_image": values}


@metric("infidelity", "faithfulness", higher_is_better=False)
def infidelity(ctx, e, *, noise: float = 0.1, samples: int = 50, normalize: bool = True, score: str = "logit") -> dict:
    """Infidelity (Yeh et al., 2019, NeurIPS, arXiv:1901.09392): E[(Iᵀa − (f(x) − f(x − I)))²]
    over Gaussian perturbations I ~ N(0, ``noise``²) (seeded), with the signed ``attribution``
    a. ``normalize`` first rescales a by the β that minimizes the error (Captum's option), so
    maps of different scale compare; lower is better."""
    engine, x = ctx.engine, ctx.x
    rng = np.random.default_rng(ctx.seed)
    perturbations = rng.normal(0.0, noise, (len(x), samples, *x.shape[1:])).astype(np.float32)
    drops = class_score(engine, x, scored(e), score)[:, None] - scores_of_variants(
        engine, len(x), lambda i: x[i] - perturbations[i], scored(e), score)
    dots = (perturbations.reshape(len(x), samples, -1).astype(np.float64)
            * e.attribution.reshape(len(x), 1, -1)).sum(axis=2)
    if normalize:
        beta = (dots * drops).mean(axis=1) / np.maximum((dots ** 2).mean(axis=1), 1e-30)
        dots = dots * beta[:, None]
    return {"per_image": ((dots - drops) ** 2).mean(axis=1)}


def _imputation_system(removed: np.ndarray):
    """Noisy linear imputation (Rong et al., 2022): each removed pixel equals the weighted mean
    of its 8 neighbours (1/6 direct, 1/12 diagonal). Returns (LU of the system over removed
    pixels, matrix mapping known pixel values to its right-hand side)."""
    h, w = removed.shape
    index = -np.ones((h, w), np.int64)
    ys, xs = np.nonzero(removed)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals, known_rows, known_cols, known_vals = [], [], [], [], [], []
    diag = np.zeros(len(ys))
    for dy, dx, weight in [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                           (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inside] += weight
        k = np.nonzero(inside)[0]
        neighbour = index[ny[k], nx[k]]
        unknown = neighbour >= 0
        rows += [k[unknown]]
        cols += [neighbour[unknown]]
        vals += [np.full(unknown.sum(), -weight)]
        known_rows += [k[~unknown]]
        known_cols += [ny[k][~unknown] * w + nx[k][~unknown]]
        known_vals += [np.full((~unknown).sum(), weight)]
    n = len(ys)
    a = sparse.csc_matrix((np.concatenate(vals + [diag]), (np.concatenate(rows + [np.arange(n)]),
                                                            np.concatenate(cols + [np.arange(n)]))), shape=(n, n))
    b = sparse.csr_matrix((np.concatenate(known_vals), (np.concatenate(known_rows), np.concatenate(known_cols))),
                          shape=(n, h * w))
    return splu(a), b, (ys, xs)


def impute(image_hwc: np.ndarray, removed: np.ndarray, noise: float, rng) -> np.ndarray:
    """``image_hwc`` with the ``removed`` pixels replaced by noisy linear imputation."""
    if not removed.any():
        return image_hwc.copy()
    lu, b, (ys, xs) = _imputation_system(removed)
    flat = image_hwc.reshape(-1, image_hwc.shape[-1]).astype(np.float64)
    values = lu.solve(np.asarray(b @ flat))
    out = image_hwc.copy()
    out[ys, xs] = (values + rng.normal(0.0, noise, values.shape)).astype(out.dtype)
    return out


@metric("road", "faithfulness", higher_is_better=False)
def road(ctx, e, *, percentages: str = "10,20,30,40,50,60,70,80,90", order: str = "morf", noise: float = 0.01,
         score: str = "probability") -> dict:
    """ROAD, Remove And Debias (Rong et al., 2022, ICML, arXiv:2202.00449): the top
    ``percentages`` of pixels (``morf``; ``lerf``: the bottom) are removed and filled by noisy
    linear imputation (neighbour weights 1/6 and 1/12, Gaussian noise σ ``noise``, seeded), so
    the removal leaks no shape; per image, the mean class probability over the percentages
    (MoRF: lower is better, LeRF: higher)."""
    if order not in ORDERS:
        raise MetricError(f"order must be morf or lerf, got {order!r}")
    try:
        fractions = np.array([float(p) / 100 for p in str(percentages).split(",")])
    except ValueError:
        raise MetricError(f"percentages must be comma-separated numbers, got {percentages!r}") from None
    if fractions.size == 0 or (fractions <= 0).any() or (fractions >= 1).any():
        raise MetricError("percentages must lie strictly between 0 and 100")
    engine, x = ctx.engine, ctx.x
    heatmap = checked_heatmap(ctx, e)
    rng = np.random.default_rng(ctx.seed)
    hwc = np.moveaxis(x, 1, -1) if engine.channel_axis == 1 else x

    def variants(i):
        rank = np.empty(heatmap[i].size, np.int64)
        rank[order_by_saliency(heatmap[i], order == "morf")] = np.arange(heatmap[i].size)
        rows = [impute(hwc[i], (rank < round(f * rank.size)).reshape(heatmap.shape[1:]), noise, rng)
                for f in fractions]
        rows = np.stack(rows)
        return np.moveaxis(rows, -1, 1) if engine.channel_axis == 1 else rows

    curves = scores_of_variants(engine, len(x), variants, scored(e), score)
    return {"per_image": curves.mean(axis=1), "curve": curves.mean(axis=0), "curves": curves,
            "percentages": fractions * 100, "higher_is_better": order == "lerf"}
