"""Frequency analysis: how much of an attribution's energy sits at high spatial frequencies,
and what the first convolution's filters pass — saliency as an instrument (a model that relies
on high-frequency detail, which its task says it should not, shows it here).

Conventions: spectra are 2-D FFT power over H×W; the radial frequency of bin (u, v) is
sqrt(u² + v²) in cycles per pixel, 0.5 being the Nyquist limit along an axis; ``cutoff`` is a
fraction of that limit. Deep-learning "convolutions" are cross-correlations: the kernel as
applied is the stored one flipped, which leaves the magnitude response unchanged (only the phase
is conjugated), so the magnitudes below hold either way.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from onnxlens.evaluation.registry import MetricError, metric


def _radius(shape: tuple[int, int]) -> np.ndarray:
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    return np.sqrt(fy ** 2 + fx ** 2)


def radial_power_spectrum(maps: np.ndarray, bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in cycles/pixel over [0, 0.5·√2], N×bins mean power) of N×H×W maps, each map
    mean-subtracted first (the DC term says nothing about structure)."""
    maps = np.asarray(maps, dtype=np.float64)
    power = np.abs(np.fft.fft2(maps - maps.mean(axis=(-2, -1), keepdims=True))) ** 2
    radius = _radius(maps.shape[-2:])
    edges = np.linspace(0, radius.max() + 1e-9, bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    counts = np.bincount(which, minlength=bins)[:bins]
    flat = power.reshape(len(maps), -1)
    sums = np.stack([np.bincount(which, weights=row, minlength=bins)[:bins] for row in flat])
    return 0.5 * (edges[1:] + edges[:-1]), sums / np.maximum(counts, 1)


def high_frequency_share(maps: np.ndarray, cutoff: float = 0.5) -> np.ndarray:
    """Per map: the share of its (mean-subtracted) spectral energy above ``cutoff`` × Nyquist."""
    if not 0 < cutoff < 1:
        raise MetricError(f"cutoff is a fraction of the Nyquist frequency in (0, 1), got {cutoff}")
    maps = np.asarray(maps, dtype=np.float64)
    power = np.abs(np.fft.fft2(maps - maps.mean(axis=(-2, -1), keepdims=True))) ** 2
    high = _radius(maps.shape[-2:]) > cutoff * 0.5
    total = power.sum(axis=(-2, -1))
    return np.divide((power * high).sum(axis=(-2, -1)), total, out=np.zeros(len(maps)), where=total > 0)


@metric("high_frequency", "complexity", higher_is_better=None)
def high_frequency(ctx, e, *, cutoff: float = 0.5) -> dict:
    """High-frequency share of the map: the fraction of its spectral energy (2-D FFT power,
    mean removed) above ``cutoff`` × the Nyquist frequency — high for speckled maps
    (shattered gradients, reliance on fine texture), low for smooth ones; no direction is
    better in itself."""
    return {"per_image": high_frequency_share(e.heatmap, cutoff)}


def first_conv_filters(engine) -> tuple[str, np.ndarray]:
    """(node name, weights out×in×kh×kw) of the first Conv reached from the input."""
    graph = engine.graph.graph
    weights = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}
    for node in graph.node:  # nodes are in topological order
        if node.op_type == "Conv" and len(node.input) > 1:
            tensor = weights.get(node.input[1]) or constants.get(node.input[1])
            if tensor is not None:
                return node.name or node.output[0], numpy_helper.to_array(tensor).astype(np.float64)
    raise MetricError("the model has no Conv with constant weights")


def filter_frequency_response(kernels: np.ndarray, size: int = 32, cutoff: float = 0.5) -> dict:
    """The magnitude response of conv kernels (out×in×kh×kw), zero-padded to ``size``×``size``
    and summed in power over input channels: ``response`` (out×size×size, DC at the centre,
    each filter scaled to its maximum), and per filter the share of its power above ``cutoff``
    × Nyquist (``high_frequency_share``) — the layer's spectral shaping of the input."""
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim != 4:
        raise MetricError(f"expected conv weights out×in×kh×kw, got shape {kernels.shape}")
    power = (np.abs(np.fft.fft2(kernels, s=(size, size))) ** 2).sum(axis=1)
    high = _radius((size, size)) > cutoff * 0.5
    share = (power * high).sum(axis=(-2, -1)) / np.maximum(power.sum(axis=(-2, -1)), 1e-300)
    response = np.fft.fftshift(np.sqrt(power), axes=(-2, -1))
    response /= np.maximum(response.max(axis=(-2, -1), keepdims=True), 1e-300)
    return {"response": response, "high_frequency_share": share, "cutoff": cutoff, "size": size}


def frequency_analysis(heatmaps: dict[str, np.ndarray], engine, cutoff: float = 0.5) -> tuple[dict, dict | None]:
    """A run's frequency analysis: per method label, the mean radial power spectrum (scaled to
    a maximum of 1) and the mean high-frequency share of its maps (N×H×W); and the first
    convolution's filters with their magnitude responses. Returns (the summary the bundle
    keeps, the arrays ``filters`` and ``responses``, or None when the model has no Conv)."""
    maps = {}
    for label, stacked in heatmaps.items():
        frequencies, power = radial_power_spectrum(stacked)
        mean_power = power.mean(axis=0)
        maps[label] = {"frequencies": frequencies, "power": mean_power / max(mean_power.max(), 1e-300),
                       "high_frequency_share": float(high_frequency_share(stacked, cutoff).mean())}
    summary = {"cutoff": cutoff, "maps": maps, "first_layer": None}
    try:
        node, weights = first_conv_filters(engine)
    except MetricError:
        return summary, None
    response = filter_frequency_response(weights, cutoff=cutoff)
    summary["first_layer"] = {"node": node, "filters": int(weights.shape[0]),
                              "high_frequency_share": response["high_frequency_share"]}
    return summary, {"filters": weights.astype(np.float32), "responses": response["response"].astype(np.float32)}
