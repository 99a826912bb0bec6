"""Heatmap overlays: the picture and the picture under a colormapped heatmap, side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from onnxlens.errors import OnnxLensError, quote
from onnxlens.scaling import unit_scale


def blend(picture: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """``picture`` (H×W×3 in [0, 1]) blended with the colormapped magnitude of the heatmap
    (signed maps show |value|, as Captum's default visualization; resized bilinearly to the
    picture), as uint8 H×W×3."""
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise OnnxLensError(f"unknown colormap {quote(colormap)}; any matplotlib colormap name works (e.g. jet, viridis)") from None
    h, w = picture.shape[:2]
    heat = unit_scale(np.abs(heatmap))
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat.astype(np.float32)).resize((w, h), Image.BILINEAR))
    colored = cmap(np.clip(heat, 0, 1))[..., :3]
    return (np.clip((1 - alpha) * picture + alpha * colored, 0, 1) * 255).round().astype(np.uint8)


def overlay(picture: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """The original on the left, its :func:`blend` with the heatmap on the right (uint8 H×2W×3)."""
    original = (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)
    return np.concatenate([original, blend(picture, heatmap, colormap, alpha)], axis=1)


def save_overlay(path: str | Path, picture: np.ndarray, heatmap: np.ndarray, colormap: str = "jet",
                 scale: int | None = None) -> None:
    """Write the side-by-side overlay as PNG, enlarged (nearest) so small inputs stay visible."""
    image = Image.fromarray(overlay(picture, heatmap, colormap))
    factor = scale or max(1, 256 // max(picture.shape[:2]))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    image.save(path)


def comparison_grid(picture: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], colormap: str = "jet",
                    scale: int | None = None) -> Image.Image:
    """One row per method: the picture, its blend with the reference model's map, its blend
    with the deployed model's map (uint8, enlarged so small inputs stay visible)."""
    original = (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)
    rows = [np.concatenate([original, blend(picture, ref, colormap), blend(picture, dep, colormap)], axis=1)
            for ref, dep in pairs]
    image = Image.fromarray(np.concatenate(rows, axis=0))
    factor = scale or max(1, 256 // max(picture.shape[:2]))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image
