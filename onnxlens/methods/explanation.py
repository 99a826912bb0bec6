"""The result every method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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

    def save_npz(self, path: str | Path) -> None:
        arrays = {"attribution": self.attribution, "heatmap": self.heatmap, "target": self.target,
                  "score": self.score}
        if self.layer_map is not None:
            arrays["layer_map"] = self.layer_map
        np.savez_compressed(path, **arrays)
