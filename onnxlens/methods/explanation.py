"""The result every method returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxlens.files import jsonable
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
    #: a region or sequence target's weights over the score tensor, one row per input (None for
    #: a class of a class-score vector): what metrics score
    weights: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The explanation as named arrays, the one .npz format of ``explain --out`` and of an
        audit's run folder: attribution, heatmap, target, score, layer_map and target_weights
        (if any), method,
        params (JSON), seconds, and as ``diagnostics/NAME`` every diagnostic with one row per
        input (e.g. MC dropout's ``heatmap_std``; of a per-tensor one such as LRP's
        conservation gap, the input's entry, which comes first)."""
        arrays = {"attribution": self.attribution, "heatmap": self.heatmap, "target": self.target,
                  "score": self.score, "method": np.asarray(self.method),
                  "params": np.asarray(json.dumps(jsonable({k: v for k, v in self.params.items()
                                                            if not isinstance(v, np.ndarray)}))),
                  "seconds": np.asarray(float(self.timings.get("total", 0.0)))}
        if self.layer_map is not None:
            arrays["layer_map"] = self.layer_map
        if self.weights is not None:
            arrays["target_weights"] = self.weights
        for name, value in self.diagnostics.items():
            if isinstance(value, dict) and value:
                value = next(iter(value.values()))
            if isinstance(value, np.ndarray) and value.shape[:1] == self.score.shape:
                arrays[f"diagnostics/{name}"] = value
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> Explanation:
        """The explanation ``to_arrays`` wrote (a dict or an open .npz)."""
        names = set(arrays.keys())
        return cls(arrays["attribution"], arrays["heatmap"], arrays["target"], arrays["score"], str(arrays["method"]),
                   json.loads(str(arrays["params"])), arrays["layer_map"] if "layer_map" in names else None,
                   {"total": float(arrays["seconds"])},
                   {k.split("/", 1)[1]: arrays[k] for k in names if k.startswith("diagnostics/")},
                   weights=arrays["target_weights"] if "target_weights" in names else None)

    def save_npz(self, path: str | Path) -> None:
        """``to_arrays`` into a compressed .npz file."""
        np.savez_compressed(path, **self.to_arrays())

    def take(self, rows) -> Explanation:
        """The explanation of the inputs at ``rows`` only (time shared out by rows)."""
        rows = list(rows)
        return Explanation(self.attribution[rows], self.heatmap[rows], self.target[rows], self.score[rows],
                           self.method, self.params, None if self.layer_map is None else self.layer_map[rows],
                           {"total": self.timings.get("total", 0.0) * len(rows) / max(1, len(self.score))},
                           {k: v[rows] for k, v in self.diagnostics.items()
                            if isinstance(v, np.ndarray) and v.shape[:1] == self.score.shape}, list(self.warnings),
                           None if self.weights is None else self.weights[rows])

    @classmethod
    def concatenate(cls, parts: list[Explanation]) -> Explanation:
        """Explanations of consecutive parts of a batch as one (by the method and parameters of
        the first; diagnostics with one row per input in every part are kept)."""
        first = parts[0]
        columns = [e.to_arrays() for e in parts]
        diagnostics = {k.split("/", 1)[1]: np.concatenate([c[k] for c in columns])
                       for k in columns[0] if k.startswith("diagnostics/") and all(k in c for c in columns)
                       and len({c[k].shape[1:] for c in columns}) == 1}
        layer_maps, weights = [e.layer_map for e in parts], [e.weights for e in parts]
        return cls(*(np.concatenate([getattr(e, name) for e in parts])
                     for name in ("attribution", "heatmap", "target", "score")),
                   first.method, first.params,
                   np.concatenate(layer_maps) if all(m is not None for m in layer_maps) else None,
                   {"total": sum(e.timings.get("total", 0.0) for e in parts)}, diagnostics,
                   list(dict.fromkeys(w for e in parts for w in e.warnings)),
                   np.concatenate(weights) if all(w is not None for w in weights) else None)
