"""The result every method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxlens.scaling import unit_scale


def spread_over_channels(heatmap: np.ndarray, x: np.ndarray, channel_axis: int) -> np.ndarray:
    """A per-pixel map (N×H×W) as an attribution shaped like ``x``: each pixel's value split
    evenly over its channels, so the sum over channels gives the map back."""
    channels = x.shape[channel_axis]
    return np.repeat(np.expand_dims(heatmap / channels, channel_axis), channels, channel_axis).astype(x.dtype)


def displayable(row: np.ndarray, layout: str) -> np.ndarray:
    """An input row as an H×W×3 picture in [0, 1] (min–max scaled: preprocessing unknown)."""
    hwc = row if layout == "NHWC" else np.moveaxis(row, 0, -1)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    return unit_scale(hwc[..., :3])


@dataclass
class Explanation:
    """An explanation of a batch: one row per input.

    ``attribution`` is signed and shaped like the model input (same layout); ``heatmap`` is the
    method's own reduction to one H×W map per input; ``layer_map`` (CAM-style methods) is the
    map at the layer's resolution before upsampling.
    """

    attribution: np.ndarray
    heatmap: np.ndarray
    target: np.ndarray  #: explained class per row
    score: np.ndarray  #: the explained score (logit by default) per row
    method: str
    params: dict = field(default_factory=dict)
    layer_map: np.ndarray | None = None
    timings: dict = field(default_factory=dict)  #: seconds per phase
    diagnostics: dict = field(default_factory=dict)  #: e.g. Integrated Gradients' completeness gap
    warnings: list = field(default_factory=list)  #: one line each: a result to read with care, and why

    def save_npz(self, path: str | Path) -> None:
        """attribution, heatmap, target, score, layer_map (if any) and, as ``diagnostics/NAME``,
        every diagnostic that is an array with one row per input (e.g. MC dropout's
        ``heatmap_std``, LIME's ``segments``)."""
        arrays = {"attribution": self.attribution, "heatmap": self.heatmap, "target": self.target,
                  "score": self.score}
        if self.layer_map is not None:
            arrays["layer_map"] = self.layer_map
        arrays.update({f"diagnostics/{name}": value for name, value in self.diagnostics.items()
                       if isinstance(value, np.ndarray) and value.shape[:1] == self.score.shape})
        np.savez_compressed(path, **arrays)
