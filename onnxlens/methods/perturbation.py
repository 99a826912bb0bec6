"""Black-box attribution by perturbing the input and watching the score: occlusion, RISE and
LIME. They need only forward passes, so they also explain models whose ops have no backward
rule. Perturbed copies are scored in chunks through one compiled graph."""

from __future__ import annotations

import numpy as np

from onnxlens.errors import quote
from onnxlens.methods.explanation import Explanation, displayable, spread_over_channels
from onnxlens.methods.registry import MethodError, method
from onnxlens.methods.scoring import class_score, pixel_mask, scores_of_copies, substrate


@method("occlusion")
def occlusion(engine, x, target, *, window: int = 8, stride: int = 4, fill: float = 0.0,
              score: str = "logit") -> Explanation:
    """Occlusion (Zeiler & Fergus, 2014, arXiv:1311.2901), as Captum's ``Occlusion``: a
    ``window``×``window`` patch over all channels, set to ``fill``, slides in steps of
    ``stride`` (positions from the top-left corner that fit inside the image); each pixel's
    attribution is the mean drop of the target ``score`` (logit or probability) over the
    windows that cover it, the same in every channel (pixels no window covers: 0).
    Heatmap: that per-pixel mean drop."""
    h, w = engine.spatial_size(x)
    if not 1 <= window <= min(h, w) or stride < 1:
        raise MethodError(f"occlusion needs 1 ≤ window ≤ {min(h, w)} and stride ≥ 1, got window={window}, "
                          f"stride={stride}")
    corners = [(r, c) for r in range(0, h - window + 1, stride) for c in range(0, w - window + 1, stride)]

    def windows(sl: slice) -> np.ndarray:  # the covered pixels of corners[sl], built chunk by chunk
        masks = np.zeros((len(corners[sl]), h, w), bool)
        for k, (r, c) in enumerate(corners[sl]):
            masks[k, r:r + window, c:c + window] = True
        return pixel_mask(engine, masks)

    clean = class_score(engine, x, target, score)
    drops = np.stack([clean[i] - scores_of_copies(engine, lambda s: np.where(windows(s), np.float32(fill), x[i]),
                                                  len(corners), target[i:i + 1], score) for i in range(len(x))])
    total, counts = np.zeros((len(x), h, w)), np.zeros((h, w))
    for k, (r, c) in enumerate(corners):
        total[:, r:r + window, c:c + window] += drops[:, k, None, None]
        counts[r:r + window, c:c + window] += 1
    per_pixel = total / np.maximum(counts, 1)
    axis = engine.channel_axis
    attribution = np.repeat(np.expand_dims(per_pixel, axis), x.shape[axis], axis).astype(np.float32)
    return Explanation(attribution, per_pixel, target, clean, "occlusion")


RISE_FILLS = ("zero", "mean", "blur")


def _rise_masks(rng, count: int, cells: int, p: float, size: tuple[int, int]) -> np.ndarray:
    """RISE masks: a ``cells``×``cells`` Bernoulli(p) grid upsampled bilinearly to (cells + 1)
    cell sizes, cropped to ``size`` at a random shift of up to one cell."""
    from skimage.transform import resize

    h, w = size
    ch, cw = -(-h // cells), -(-w // cells)
    grids = (rng.random((count, cells, cells)) < p).astype(np.float64)
    shifts = rng.integers(0, [ch, cw], size=(count, 2))
    out = np.empty((count, h, w), np.float32)
    for k in range(count):
        up = resize(grids[k], ((cells + 1) * ch, (cells + 1) * cw), order=1, mode="reflect", anti_aliasing=False)
        out[k] = up[shifts[k, 0]:shifts[k, 0] + h, shifts[k, 1]:shifts[k, 1] + w]
    return out


@method("rise")
def rise(engine, x, target, *, masks: int = 2000, cells: int = 8, p: float = 0.5, fill: str = "zero",
         seed: int = 0, score: str = "probability") -> Explanation:
    """RISE (Petsiuk et al., 2018, BMVC, arXiv:1806.07421): the input multiplied by ``masks``
    random smooth masks (:func:`_rise_masks`, seeded, the same for every input); the map is
    the score-weighted sum of the masks, Σ f(x ⊙ M)·M / (N·p) — the expected score when a
    pixel is kept. Scores are class probabilities by default, as in the paper. Hidden pixels
    become zero (``fill="zero"``, the paper's x ⊙ M, which is the dataset mean for inputs
    normalized as ImageNet's), the image's per-channel mean (``"mean"``: the same for models
    that take [0, 1] pixels) or its blur (``"blur"``, σ 5 px as RISE's deletion metric):
    b + (x − b) ⊙ M.
    Attribution: the map spread evenly over the channels."""
    if masks < 1 or cells < 1 or not 0 < p < 1:
        raise MethodError(f"rise needs masks ≥ 1, cells ≥ 1 and 0 < p < 1, got masks={masks}, cells={cells}, p={p}")
    if fill not in RISE_FILLS:
        raise MethodError(f"fill must be one of {', '.join(RISE_FILLS)}, got {quote(fill)}")
    size = engine.spatial_size(x)
    background = substrate(engine, x, fill)
    rng = np.random.default_rng(seed)
    saliency = np.zeros((len(x), *size))
    chunk = 256
    for start in range(0, masks, chunk):
        m = _rise_masks(rng, min(chunk, masks - start), cells, p, size)
        kept = pixel_mask(engine, m)
        for i in range(len(x)):
            s = scores_of_copies(engine, lambda sl: (background[i] + (x[i] - background[i]) * kept[sl]).astype(
                np.float32), len(m), target[i:i + 1], score)
            saliency[i] += np.tensordot(s, m, axes=(0, 0))
    saliency /= masks * p
    return Explanation(spread_over_channels(saliency, x, engine.channel_axis), saliency, target,
                       class_score(engine, x, target, score), "rise")


SEGMENTATIONS = ("slic", "grid")
FILLS = ("mean", "zero")


def segment(picture: np.ndarray, segments: str, n_segments: int, compactness: float) -> np.ndarray:
    """H×W integer labels 0..K−1 of an H×W×3 picture in [0, 1]: SLIC superpixels
    (Achanta et al., 2012; scikit-image) or a near-square grid of about ``n_segments`` cells."""
    h, w = picture.shape[:2]
    if segments == "slic":
        from skimage.segmentation import slic

        labels = slic(picture, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
        return np.unique(labels, return_inverse=True)[1].reshape(h, w)
    if segments == "grid":
        side = max(1, round(np.sqrt(n_segments)))
        rows = np.minimum(np.arange(h) * side // h, side - 1)
        cols = np.minimum(np.arange(w) * side // w, side - 1)
        return rows[:, None] * side + cols[None, :]
    raise MethodError(f"segments must be one of {', '.join(SEGMENTATIONS)}, got {quote(segments)}")


def weighted_ridge(z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[np.ndarray, float, float]:
    """(coefficients, intercept, weighted R²) of ridge regression with an unpenalized intercept
    and sample weights — what scikit-learn's ``Ridge(alpha).fit(z, y, sample_weight)`` solves."""
    wsum = weights.sum()
    z_mean, y_mean = weights @ z / wsum, weights @ y / wsum
    zc, yc = z - z_mean, y - y_mean
    gram = zc.T @ (weights[:, None] * zc) + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, zc.T @ (weights * yc))
    residual = yc - zc @ coef
    total = weights @ yc ** 2
    r2 = 1.0 - (weights @ residual ** 2) / total if total > 0 else 0.0
    return coef, float(y_mean - z_mean @ coef), float(r2)


@method("lime")
def lime(engine, x, target, *, segments: str = "slic", n_segments: int = 50, compactness: float = 10.0,
         samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0, fill: str = "mean", seed: int = 0,
         score: str = "probability") -> Explanation:
    """LIME for images (Ribeiro et al., 2016, KDD, arXiv:1602.04938), as the ``lime`` package's
    image explainer does it: the input cut into superpixels (``segments``: SLIC or a grid);
    ``samples`` random on/off patterns (the first all on, seeded) with the off segments filled by
    their mean colour (``fill=mean``, the package's default) or zero; each pattern weighted by
    sqrt(exp(−d²/kernel_width²)), d its cosine distance to all-on; a weighted ridge regression
    (``alpha``) of the class score (probability by default) on the patterns. The map gives each
    pixel its segment's weight; ``diagnostics`` hold the segments, the weights and the
    surrogate's weighted R². Attribution: the map spread evenly over the channels."""
    if fill not in FILLS:
        raise MethodError(f"fill must be one of {', '.join(FILLS)}, got {quote(fill)}")
    if samples < 2 or n_segments < 1 or kernel_width <= 0 or alpha < 0:
        raise MethodError("lime needs samples ≥ 2, n_segments ≥ 1, kernel_width > 0 and alpha ≥ 0")
    layout = engine.spec.image_input.layout
    rng = np.random.default_rng(seed)
    maps, all_labels, weights, fits = [], [], [], []
    for i in range(len(x)):
        labels = segment(displayable(x[i], layout), segments, n_segments, compactness)
        k = int(labels.max()) + 1
        onehot = labels[None] == np.arange(k)[:, None, None]  # K×H×W
        hidden = _hidden(engine, x[i], onehot, fill)
        patterns = rng.integers(0, 2, size=(samples, k)).astype(np.float64)
        patterns[0] = 1

        def make(sl, patterns=patterns, labels=labels, hidden=hidden, row=x[i]):
            off = pixel_mask(engine, patterns[sl][:, labels] == 0)  # per copy: pixels of switched-off segments
            return np.where(off, hidden, row).astype(np.float32)

        y = scores_of_copies(engine, make, samples, target[i:i + 1], score)
        norms = np.linalg.norm(patterns, axis=1)
        similarity = np.divide(patterns.sum(axis=1), norms * np.sqrt(k), out=np.zeros(samples), where=norms > 0)
        kernel = np.sqrt(np.exp(-((1 - similarity) ** 2) / kernel_width ** 2))
        coef, _, r2 = weighted_ridge(patterns, y, kernel, alpha)
        maps.append(coef[labels])
        all_labels.append(labels)
        weights.append(coef)
        fits.append(r2)
    kmax = max(len(c) for c in weights)
    padded = np.full((len(x), kmax), np.nan)
    for i, c in enumerate(weights):
        padded[i, :len(c)] = c
    heatmap = np.stack(maps)
    return Explanation(spread_over_channels(heatmap, x, engine.channel_axis), heatmap, target,
                       class_score(engine, x, target, score), "lime",
                       diagnostics={"segments": np.stack(all_labels), "segment_weights": padded,
                                    "surrogate_r2": np.asarray(fits)})


def _hidden(engine, row: np.ndarray, onehot: np.ndarray, fill: str) -> np.ndarray:
    """What hidden pixels of ``row`` become: their segment's mean colour, or zero."""
    if fill == "zero":
        return np.zeros_like(row)
    axis = engine.channel_axis - 1  # the row's channel axis
    hwc = np.moveaxis(row, axis, -1).astype(np.float64)
    means = np.tensordot(onehot, hwc, axes=((1, 2), (0, 1))) / onehot.sum(axis=(1, 2))[:, None]  # K×C
    painted = np.tensordot(onehot.astype(np.float64), means, axes=(0, 0))  # H×W×C
    return np.moveaxis(painted, -1, axis).astype(row.dtype)
