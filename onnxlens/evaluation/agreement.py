"""Agreement between two maps of the same images (Riche et al., 2013, ICCV; Bylinskii et al.,
2019, IEEE TPAMI 41(3) — the saliency-benchmark measures the survey uses to compare maps).

Correlations read the maps as given; SSIM, L1 and Dice read them min–max scaled to [0, 1];
KL and SIM read them as distributions (scaled maps divided by their sum); AUC scores the
second map against the first map's top pixels (or a boolean map, e.g. fixations) as positives.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import pearsonr, rankdata, spearmanr

from onnxlens.evaluation.maps import top_fraction, unit_scaled

MEASURES = ("pearson", "spearman", "ssim", "l1", "kl", "sim", "dice", "auc")
#: Whether a higher value means closer agreement.
HIGHER_IS_CLOSER = {"pearson": True, "spearman": True, "ssim": True, "l1": False, "kl": False, "sim": True,
                    "dice": True, "auc": True}
EPS = 1e-12


def _correlation(fn, a, b):
    return np.array([fn(x.ravel(), y.ravel())[0] if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
                     for x, y in zip(a, b)], dtype=np.float64)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """Mean structural similarity (Wang et al., 2004, IEEE TIP 13(4)) per map pair: Gaussian
    window σ 1.5 (11 taps), K₁ = 0.01, K₂ = 0.03."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda t: ndimage.gaussian_filter(t, (0, sigma, sigma), truncate=3.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return index.reshape(len(a), -1).mean(axis=1)


def _distribution(maps):
    scaled = unit_scaled(maps).reshape(len(maps), -1)
    return scaled / np.maximum(scaled.sum(axis=1, keepdims=True), EPS)


def auc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """ROC AUC of each map's pixel values for telling ``positives`` from the rest (Mann–Whitney)."""
    out = np.full(len(scores), np.nan)
    for i, (s, p) in enumerate(zip(scores.reshape(len(scores), -1), positives.reshape(len(scores), -1))):
        n_pos, n_neg = p.sum(), (~p).sum()
        if n_pos and n_neg:
            ranks = rankdata(s)
            out[i] = (ranks[p].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def compare(a: np.ndarray, b: np.ndarray, measures=MEASURES, fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Measure → per-image agreement of maps ``a`` and ``b`` (N×H×W). ``fraction``: the top share
    of pixels that Dice thresholds and that AUC takes from ``a`` as positives (a boolean ``a`` is
    used as it is)."""
    a = np.asarray(a)
    b = np.asarray(b, dtype=np.float64)
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown agreement measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    binary_a = a.astype(bool) if a.dtype == bool else top_fraction(a.astype(np.float64), fraction)
    a = a.astype(np.float64)
    out = {}
    for name in measures:
        if name == "pearson":
            out[name] = _correlation(pearsonr, a, b)
        elif name == "spearman":
            out[name] = _correlation(spearmanr, a, b)
        elif name == "ssim":
            out[name] = ssim(unit_scaled(a), unit_scaled(b))
        elif name == "l1":
            out[name] = np.abs(unit_scaled(a) - unit_scaled(b)).reshape(len(a), -1).mean(axis=1)
        elif name == "kl":
            p, q = _distribution(a), _distribution(b)
            out[name] = (p * np.log(EPS + p / (q + EPS))).sum(axis=1)
        elif name == "sim":
            out[name] = np.minimum(_distribution(a), _distribution(b)).sum(axis=1)
        elif name == "dice":
            x, y = binary_a.reshape(len(a), -1), top_fraction(b, fraction).reshape(len(b), -1)
            out[name] = 2 * (x & y).sum(axis=1) / np.maximum(x.sum(axis=1) + y.sum(axis=1), 1)
        elif name == "auc":
            out[name] = auc(b, binary_a)
    return out
