"""Min–max scaling to [0, 1], shared by every layer that shows or compares maps."""

from __future__ import annotations

import numpy as np


def unit_scale(values: np.ndarray, rows: bool = False) -> np.ndarray:
    """``values`` min–max scaled to [0, 1] in float64 — as a whole, or each row (axis 0) on its
    own; a constant array (or row) becomes zeros."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values) if rows else 1, -1)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return ((flat - lo) / np.where(hi > lo, hi - lo, 1.0) * (hi > lo)).reshape(values.shape)
