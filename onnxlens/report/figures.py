"""Figures embedded in reports as data URIs (no files beside the page, no network)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from onnxlens.bundle import is_baseline  # noqa: E402
from onnxlens.scaling import unit_scale  # noqa: E402



def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _figure_uri(fig) -> str:
    """A finished matplotlib figure as a PNG data URI (the figure is closed)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return _data_uri(buffer.getvalue())


def png_uri(image: np.ndarray) -> str:
    """A uint8 H×W×3 array as a PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _data_uri(buffer.getvalue())


def enlarged_uri(image: np.ndarray, side: int = 128) -> str:
    """A uint8 H×W×3 image as a PNG data URI, enlarged (nearest, integer factor) towards
    ``side`` pixels so small inputs stay visible."""
    factor = max(1, side // max(image.shape[:2]))
    if factor > 1:
        image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return png_uri(image)


def curves_uri(title: str, curves: dict[str, list[float]], xlabel: str, ylabel: str) -> str:
    """Mean curves of several methods on [0, 1] as one line chart (model-free baselines,
    labelled ``baseline:…``, dashed)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=100)
    for label, values in curves.items():
        style = {"linestyle": "--", "linewidth": 1.0} if is_baseline(label) else {"linewidth": 1.8}
        ax.plot(np.linspace(0, 1, len(values)), values, label=label, **style)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _figure_uri(fig)


def spectra_uri(title: str, series: dict[str, tuple[list[float], list[float]]]) -> str:
    """Radial power spectra (frequency, relative power) of several methods' maps, log power."""
    fig, ax = plt.subplots(figsize=(5.6, 3.2), dpi=100)
    for label, (frequencies, power) in series.items():
        ax.semilogy(frequencies, np.maximum(power, 1e-12), marker=".", label=label)
    ax.axvline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set(title=title, xlabel="spatial frequency (cycles per pixel)", ylabel="relative power")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _figure_uri(fig)


def layers_uri(title: str, series: dict[str, list[float]], layers: list[str]) -> str:
    """Similarity to the original map after randomizing each layer (top-down), one line per
    method (Adebayo et al.'s figure)."""
    fig, ax = plt.subplots(figsize=(max(4.2, 0.45 * len(layers) + 1.5), 3.2), dpi=100)
    for label, values in series.items():
        ax.plot(range(len(values)), values, marker="o", label=label)
    ax.set_xticks(range(len(layers)), [name[-18:] for name in layers], rotation=60, ha="right", fontsize=6)
    ax.set(title=title, ylabel="Spearman |map| vs original", ylim=(-0.2, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _figure_uri(fig)


def tile_grid(images: np.ndarray, columns: int = 8, scale: int = 4, pad: int = 2) -> np.ndarray:
    """Images (N×C×h×w, C = 1 or 3, any values) min–max scaled one by one and tiled into one
    uint8 RGB picture, enlarged ``scale`` times (nearest) with white gaps — for filters and
    spectra."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h * scale + pad) + pad, min(n, columns) * (w * scale + pad) + pad, 3), 255, np.uint8)
    for k, image in enumerate(np.asarray(images, dtype=np.float64)):
        unit = unit_scale(image)
        rgb = np.repeat(unit, 3, axis=0) if c == 1 else unit[:3]
        tile = np.repeat(np.repeat((np.moveaxis(rgb, 0, -1) * 255).round().astype(np.uint8), scale, 0), scale, 1)
        r, col = divmod(k, columns)
        y, x = pad + r * (h * scale + pad), pad + col * (w * scale + pad)
        out[y:y + h * scale, x:x + w * scale] = tile
    return out
