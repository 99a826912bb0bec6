"""Model-free saliency baselines: maps computed from the image alone. An explanation that
does not localize better than these says nothing about the model (the course's "limits of
saliency"). Each takes an H×W×3 picture in [0, 1] and returns an H×W map in [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from onnxlens.evaluation.maps import unit_scaled
from onnxlens.methods.explanation import displayable


def _gray(picture):
    return picture @ np.array([0.299, 0.587, 0.114])


def _resized(image, shape):
    factors = [t / s for t, s in zip(shape, image.shape)]
    return ndimage.zoom(image, factors, order=1, mode="nearest")[: shape[0], : shape[1]]


def _opponents(picture):
    r, g, b = picture[..., 0], picture[..., 1], picture[..., 2]
    return r - g, b - (r + g) / 2


def center_surround(picture: np.ndarray) -> np.ndarray:
    """Center–surround contrast: |G(σ)∗F − G(4σ)∗F| for σ ∈ {1, 2, 4} px (scaled to the image
    size), summed over intensity and the red–green and blue–yellow opponent channels."""
    scale = max(picture.shape[:2]) / 64
    total = np.zeros(picture.shape[:2])
    for feature in (_gray(picture), *_opponents(picture)):
        for sigma in (1, 2, 4):
            s = sigma * scale
            total += np.abs(ndimage.gaussian_filter(feature, s) - ndimage.gaussian_filter(feature, 4 * s))
    return unit_scaled(total[None])[0]


def spectral_residual(picture: np.ndarray, width: int = 64, smoothing: float = 2.5) -> np.ndarray:
    """Spectral residual (Hou & Zhang, 2007, CVPR): at ``width`` px, the log amplitude spectrum
    minus its 3×3 local mean, transformed back with the original phase, squared, and smoothed
    by a Gaussian of σ ``smoothing`` px."""
    gray = _gray(picture)
    small = _resized(gray, (max(1, round(gray.shape[0] * width / gray.shape[1])), width))
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-12)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, 3, mode="nearest")
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    return unit_scaled(_resized(ndimage.gaussian_filter(saliency, smoothing), gray.shape)[None])[0]


def local_entropy(picture: np.ndarray, window: int = 9, bins: int = 16) -> np.ndarray:
    """Shannon entropy of the gray-level histogram (``bins`` levels) in a ``window``×``window``
    neighbourhood of each pixel."""
    levels = np.minimum((_gray(picture) * bins).astype(int), bins - 1)
    total = np.zeros(levels.shape)
    for level in range(bins):
        p = ndimage.uniform_filter((levels == level).astype(np.float64), window, mode="reflect")
        total -= np.where(p > 0, p * np.log(np.maximum(p, 1e-12)), 0.0)
    return unit_scaled(total[None])[0]


def _normalized(feature_map):
    """Itti's N(·): scale to [0, 1], then weight by (1 − m̄)², m̄ the mean of the other local maxima."""
    m = unit_scaled(feature_map[None])[0]
    peaks = (m == ndimage.maximum_filter(m, size=max(3, min(m.shape) // 8))) & (m > 0)
    values = m[peaks]
    others = values[values < 1.0]
    mean = others.mean() if others.size else 0.0
    return m * (1 - mean) ** 2


def itti(picture: np.ndarray) -> np.ndarray:
    """Itti, Koch & Niebur (1998, IEEE TPAMI 20(11)): Gaussian pyramids of intensity,
    red–green and blue–yellow opponency and four Gabor orientations; across-scale differences
    between centre levels c ∈ {2, 3, 4} and surround levels c + {3, 4} (clamped to the pyramid's
    depth for small images); N(·)-normalized conspicuity maps averaged."""
    gray = _gray(picture)
    rg, by = _opponents(picture)
    features = {"intensity": [gray], "color": [rg, by]}
    y, x = np.mgrid[-3:4, -3:4]
    gabors = []
    for theta in np.deg2rad([0, 45, 90, 135]):
        u = x * np.cos(theta) + y * np.sin(theta)
        kernel = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2)) * np.cos(2 * np.pi * u / 4)
        gabors.append(np.abs(ndimage.convolve(gray, kernel - kernel.mean(), mode="reflect")))
    features["orientation"] = gabors
    depth = max(1, int(np.log2(min(gray.shape))) - 1)
    conspicuity = []
    for maps in features.values():
        combined = np.zeros(gray.shape)
        for feature in maps:
            pyramid = [feature]
            for _ in range(depth):
                pyramid.append(ndimage.zoom(ndimage.gaussian_filter(pyramid[-1], 1.0), 0.5, order=1))
            for c in (2, 3, 4):
                for delta in (3, 4):
                    center, surround = min(c, depth - 1), min(c + delta, depth)
                    if center >= surround:
                        continue
                    diff = np.abs(_resized(pyramid[center], gray.shape) - _resized(pyramid[surround], gray.shape))
                    combined += _normalized(diff)
        conspicuity.append(_normalized(combined))
    return unit_scaled(np.mean(conspicuity, axis=0)[None])[0]


BASELINES = {"center_surround": center_surround, "spectral_residual": spectral_residual,
             "local_entropy": local_entropy, "itti": itti}


def baseline_maps(x: np.ndarray, layout: str, names=tuple(BASELINES)) -> dict[str, np.ndarray]:
    """Name → N×H×W maps of the model-free baselines for a batch of model inputs (pictures
    recovered by min–max scaling each input)."""
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    pictures = [displayable(row, layout) for row in x]
    return {name: np.stack([BASELINES[name](p) for p in pictures]) for name in names}
