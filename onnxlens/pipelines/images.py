"""Turn image files into model-ready arrays."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onnxlens.errors import ImageReadError, quote
from onnxlens.limits import ResourceLimitError
from onnxlens.limits import check as check_limit
from onnxlens.graph_ops.model_spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resized to the model's size (bilinear) — or, with
    ``resize_shorter``, its shorter side resized to that many pixels and the model's size cut
    from the centre — scaled to ``value_range`` ("0-1" or "0-255"), then (x − mean) / std per
    channel, in ``channel_order``."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    channel_order: str = "rgb"
    value_range: str = "0-1"
    resize_shorter: int | None = None


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive), in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path, spec: InputSpec, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """One input row (no batch axis) in the model's layout; ImageReadError if unreadable."""
    channels = spec.channels if isinstance(spec.channels, int) else 3
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning; the limit below is stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img_file = Image.open(path)
        with img_file as img:
            check_limit("image_pixels", img.size[0] * img.size[1], f"image {quote(str(path))} ({img.size[0]}×{img.size[1]})")
            img = img.convert("L" if channels == 1 else "RGB")
            h, w = spec.spatial
            if isinstance(h, int) and isinstance(w, int) and prep.resize_shorter:
                scale = prep.resize_shorter / min(img.size)
                img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))),
                                 Image.BILINEAR)
                left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
                img = img.crop((left, top, left + w, top + h))
            elif isinstance(h, int) and isinstance(w, int) and img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except Image.DecompressionBombError:
        raise ResourceLimitError(f"image {quote(str(path))} has more pixels than Pillow decodes "
                                 f"({2 * Image.MAX_IMAGE_PIXELS:,})") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {quote(str(path))}: {exc}") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if prep.channel_order == "bgr":
        pixels = pixels[..., ::-1]
    if prep.value_range == "0-1":
        pixels = pixels / 255.0
    elif prep.value_range != "0-255":
        raise ImageReadError(f"value_range must be '0-1' or '0-255', got {quote(prep.value_range)}")
    if prep.mean is not None:
        pixels = pixels - np.asarray(prep.mean, np.float32)
    if prep.std is not None:
        pixels = pixels / np.asarray(prep.std, np.float32)
    row = pixels if spec.layout == "NHWC" else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(row, dtype=np.float32)
