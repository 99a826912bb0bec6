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

from onnxlens.evaluation.curves import curves
from onnxlens.evaluation.maps import checked_heatmap
from onnxlens.evaluation.perturbation import order_by_saliency, substrate
from onnxlens.evaluation.registry import MetricError, metric, scored
from onnxlens.methods.scoring import blurred, pixel_mask, scores_of_variants


def _grid_doc(fn):
    """Completes a curve metric's docstring with what its step parameters mean."""
    fn.__doc__ = fn.__doc__.format(steps="""``steps`` > 0 samples that many even steps; 0 (the default) starts from 8
    and doubles an image's steps, reusing its points, until its area moves by at most
    ``tolerance``, up to ``max_steps`` (``steps`` and ``step_error`` per image in the result).""")
    return fn


@metric("deletion", "faithfulness", higher_is_better=False, passes_per_map=True)
@_grid_doc
def deletion(ctx, e, *, steps: int = 0, tolerance: float = 0.01, max_steps: int = 64, substrate_kind: str = "zero",
             score: str = "probability") -> dict:
    """Deletion (Petsiuk et al., 2018, arXiv:1806.07421, the RISE protocol): the most salient
    pixels are replaced, all channels at once, by the substrate (``zero`` — the mean of a
    normalized input — or each image's channel ``mean``); the class-probability curve's area
    over the removed fraction [0, 1]. Lower is better.

    {steps}"""
    end = substrate(ctx, substrate_kind)
    return curves(ctx, e, ("input", ctx.x), (("substrate", substrate_kind), end), steps=steps, tolerance=tolerance,
                  max_steps=max_steps, score=score)


@metric("insertion", "faithfulness", higher_is_better=True, passes_per_map=True)
@_grid_doc
def insertion(ctx, e, *, steps: int = 0, tolerance: float = 0.01, max_steps: int = 64, blur_kernel: int = 11,
              blur_sigma: float = 5.0, score: str = "probability") -> dict:
    """Insertion (Petsiuk et al., 2018, the RISE protocol): starting from the image blurred
    with a ``blur_kernel``-wide Gaussian of σ ``blur_sigma``, the most salient pixels are put
    back; the class-probability curve's area. Higher is better.

    {steps}"""
    key = ("blur", blur_kernel, blur_sigma)
    start = ctx.shared(key, lambda: blurred(ctx.engine, ctx.x, blur_sigma, blur_kernel))
    return curves(ctx, e, (key, start), ("input", ctx.x), steps=steps, tolerance=tolerance, max_steps=max_steps,
                  score=score)


ORDERS = ("morf", "lerf")


@metric("pixel_flipping", "faithfulness", higher_is_better=None, passes_per_map=True)
@_grid_doc
def pixel_flipping(ctx, e, *, order: str = "morf", patch: int = 1, steps: int = 0, tolerance: float = 0.01,
                   max_steps: int = 64, substrate_kind: str = "zero", score: str = "probability") -> dict:
    """Pixel flipping (Bach et al., 2015, PLoS ONE 10(7)) and region perturbation (Samek et al.,
    2017, IEEE TNNLS 28(11)) with ``patch`` > 1: pixels or patch×patch regions (ranked by their
    summed saliency) are flipped to the substrate most relevant first (``morf``: a steep fall,
    lower area is better) or least relevant first (``lerf``: higher is better). Quantus's
    ``features_in_step`` = H·W / ``steps``, its ``perturb_baseline`` = ``substrate_kind``;
    MoRF with patch 1 is deletion's curve (computed once when both run).

    {steps}"""
    if order not in ORDERS:
        raise MetricError(f"order must be morf or lerf, got {order!r}")
    if patch < 1:
        raise MetricError(f"patch must be a positive pixel count, got {patch}")
    end = substrate(ctx, substrate_kind)
    return {**curves(ctx, e, ("input", ctx.x), (("substrate", substrate_kind), end), steps=steps, tolerance=tolerance,
                     max_steps=max_steps, score=score, most_relevant_first=order == "morf", patch=patch),
            "higher_is_better": order == "lerf"}


@metric("faithfulness_correlation", "faithfulness", higher_is_better=True)
def faithfulness_correlation(ctx, e, *, subset_size: int = 224, runs: int = 100, substrate_kind: str = "zero",
                             score: str = "logit") -> dict:
    """Faithfulness correlation (Bhatt et al., 2020, IJCAI, arXiv:2005.00631): over ``runs``
    random subsets of ``subset_size`` pixels (seeded), the Pearson correlation between the
    saliency summed over the subset and the score drop when the subset is set to the substrate
    (defaults as Quantus: 224 pixels, 100 runs, black substrate, the logit). Every map of a
    batch is scored on the same subsets, their drops computed once."""
    heatmap = checked_heatmap(ctx, e)
    n_pixels = heatmap[0].size
    if not 0 < subset_size < n_pixels:
        raise MetricError(f"subset_size must be between 1 and {n_pixels - 1}, got {subset_size}")
    target = scored(e)
    subsets, drops = ctx.shared(("random subsets", subset_size, runs, substrate_kind, score,
                                 np.asarray(target).tobytes()),
                                lambda: _subset_drops(ctx, target, subset_size, runs, substrate_kind, score))
    sums = (subsets * heatmap[:, None]).sum(axis=(2, 3))
    values = [pearsonr(s, d)[0] if np.std(s) > 0 and np.std(d) > 0 else np.nan for s, d in zip(sums, drops)]
    return {"per_image": values}


def _subset_drops(ctx, target, subset_size: int, runs: int, substrate_kind: str, score: str):
    """(subsets, score drops) of faithfulness correlation: they depend on the images and the
    seed, not on the map, so every map of a batch is scored on the same ones."""
    engine, x = ctx.engine, ctx.x
    shape = engine.spatial_size(x)
    n_pixels = shape[0] * shape[1]
    rng = np.random.default_rng(ctx.seed)
    subsets = np.zeros((len(x), runs, n_pixels), bool)
    for i in range(len(x)):
        for r in range(runs):
            subsets[i, r, rng.choice(n_pixels, subset_size, replace=False)] = True
    subsets = subsets.reshape(len(x), runs, *shape)
    end = substrate(ctx, substrate_kind)
    drops = ctx.scores("input", x, target, score)[:, None] - scores_of_variants(
        engine, len(x), lambda i: np.where(pixel_mask(engine, subsets[i]), end[i], x[i]), target, score)
    return subsets, drops


@metric("infidelity", "faithfulness", higher_is_better=False)
def infidelity(ctx, e, *, noise: float = 0.1, samples: int = 50, normalize: bool = True, score: str = "logit") -> dict:
    """Infidelity (Yeh et al., 2019, NeurIPS, arXiv:1901.09392): E[(Iᵀa − (f(x) − f(x − I)))²]
    over Gaussian perturbations I ~ N(0, ``noise``²) (seeded), with the signed ``attribution``
    a. ``normalize`` first rescales a by the β that minimizes the error (Captum's option), so
    maps of different scale compare; lower is better. Every map of a batch is scored on the
    same perturbations, their drops computed once."""
    x, target = ctx.x, scored(e)
    perturbations, drops = ctx.shared(("gaussian perturbations", noise, samples, score, np.asarray(target).tobytes()),
                                      lambda: _noise_drops(ctx, target, noise, samples, score))
    dots = (perturbations.reshape(len(x), samples, -1).astype(np.float64)
            * e.attribution.reshape(len(x), 1, -1)).sum(axis=2)
    if normalize:
        beta = (dots * drops).mean(axis=1) / np.maximum((dots ** 2).mean(axis=1), 1e-30)
        dots = dots * beta[:, None]
    return {"per_image": ((dots - drops) ** 2).mean(axis=1)}


def _noise_drops(ctx, target, noise: float, samples: int, score: str):
    """(perturbations, score drops) of infidelity, shared by every map of a batch as
    :func:`_subset_drops` are."""
    engine, x = ctx.engine, ctx.x
    rng = np.random.default_rng(ctx.seed)
    perturbations = rng.normal(0.0, noise, (len(x), samples, *x.shape[1:])).astype(np.float32)
    drops = ctx.scores("input", x, target, score)[:, None] - scores_of_variants(
        engine, len(x), lambda i: x[i] - perturbations[i], target, score)
    return perturbations, drops


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


@metric("road", "faithfulness", higher_is_better=False, passes_per_map=True)
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
