"""Datasets of an audit: items (one per input) from an image folder, a .npy/.npz batch or a
manifest, loaded batch by batch; an unreadable item is recorded as failed, never fatal."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from onnxlens.errors import ImageReadError, OnnxLensError, quote
from onnxlens.pipelines.config import DatasetConfig
from onnxlens.pipelines.images import IMAGE_SUFFIXES, Preprocessing, list_images, load_image


class DatasetError(OnnxLensError):
    """A dataset that cannot be listed at all (missing folder, unreadable manifest)."""


@dataclass(frozen=True)
class Item:
    id: str  #: stable name in results (file path relative to the dataset, or the array row)
    source: str  #: image path, or "array:ROW"
    label: int | None = None
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None  #: mask image path, or "array:ROW"


@dataclass
class Batch:
    items: list[Item]
    x: np.ndarray  #: inputs of the items that loaded, in order
    ok: list[Item]  #: those items
    masks: np.ndarray | None = None  #: N×H×W for ``ok`` (empty masks where an item has none)
    failed: dict[str, str] = field(default_factory=dict)  #: item id → why


def list_items(config: DatasetConfig) -> list[Item]:
    path = config.path
    if not path.exists():
        raise DatasetError(f"dataset {quote(str(path))} does not exist")
    if path.is_dir():
        items = _folder_items(path, config.mask_suffix)
    elif path.suffix.lower() in (".npy", ".npz"):
        items = _array_items(config)
    elif path.suffix.lower() in (".csv", ".json"):
        items = _manifest_items(path)
    else:
        raise DatasetError(f"dataset {quote(str(path))} must be a folder, .npy, .npz, .csv or .json")
    if not items:
        raise DatasetError(f"dataset {quote(str(path))} holds no inputs")
    return items[: config.limit] if config.limit else items


def _folder_items(folder: Path, mask_suffix: str | None) -> list[Item]:
    items = []
    for p in list_images(folder):
        if p.stem.endswith("_mask"):
            continue
        mask = p.with_name(f"{p.stem}{mask_suffix}{p.suffix}") if mask_suffix else None
        items.append(Item(p.relative_to(folder).as_posix(), str(p),
                          mask=str(mask) if mask is not None and mask.exists() else None))
    return items


def _load_npz(config: DatasetConfig):
    try:
        data = np.load(config.path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {quote(str(config.path))}: {exc}") from None
    if not hasattr(data, "files"):
        return {"x": data}
    with data:
        return {k: data[k] for k in data.files}


def _array_items(config: DatasetConfig) -> list[Item]:
    arrays = _load_npz(config)
    x = _pick(arrays, config.input_key, "x", config)
    labels = arrays[config.labels_key] if config.labels_key else None
    for key in (config.labels_key, config.masks_key):
        if key and key not in arrays:
            raise DatasetError(f"{quote(str(config.path))} has no array {quote(key)}; it holds {', '.join(arrays)}")
    return [Item(f"row{i:05d}", f"array:{i}", None if labels is None else int(labels[i]),
                 mask=f"array:{i}" if config.masks_key else None) for i in range(len(x))]


def _pick(arrays, key, default, config):
    name = key or (default if default in arrays else next(iter(arrays)) if len(arrays) == 1 else None)
    if name not in arrays:
        raise DatasetError(f"{quote(str(config.path))} holds {', '.join(arrays)}; set dataset.input_key")
    return arrays[name]


def _manifest_items(path: Path) -> list[Item]:
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read manifest {quote(str(path))}: {exc}") from None
    if not isinstance(rows, list) or any(not isinstance(r, dict) or not r.get("path") for r in rows):
        raise DatasetError(f"manifest {quote(str(path))} must list rows with a 'path' (and optional label, box, mask)")
    items = []
    for row in rows:
        image = path.parent / str(row["path"])
        label = row.get("label")
        box = row.get("box")
        if isinstance(box, str):
            box = [float(v) for v in box.replace(",", " ").split()] if box.strip() else None
        mask = row.get("mask")
        items.append(Item(str(row["path"]), str(image), int(label) if label not in (None, "") else None,
                          tuple(box) if box else None, str(path.parent / mask) if mask else None))
    return items


def load_batch(config: DatasetConfig, items: list[Item], spec, size: tuple[int, int]) -> Batch:
    """The inputs (and masks) of ``items``; items that cannot be read are recorded in ``failed``."""
    prep = Preprocessing(**config.preprocessing.model_dump(exclude={"layout"}))
    arrays = _load_npz(config) if any(i.source.startswith("array:") for i in items) else None
    rows, ok, masks, failed = [], [], [], {}
    for item in items:
        try:
            if item.source.startswith("array:"):
                x = _pick(arrays, config.input_key, "x", config)
                row = np.asarray(x[int(item.source[6:])], dtype=np.float32)
            else:
                if Path(item.source).suffix.lower() not in IMAGE_SUFFIXES:
                    raise ImageReadError(f"{quote(item.source)} is not an image file")
                row = load_image(Path(item.source), spec, prep)
            masks.append(_mask(config, item, arrays, size))
        except (OnnxLensError, OSError, ValueError) as exc:
            failed[item.id] = str(exc)
            continue
        rows.append(row)
        ok.append(item)
    x = np.stack(rows) if rows else np.zeros((0,), np.float32)
    has_masks = any(i.mask or i.box for i in items)
    return Batch(items, x, ok, np.stack(masks) if has_masks and masks else None, failed)


def _mask(config, item: Item, arrays, size) -> np.ndarray:
    mask = np.zeros(size, bool)
    if item.box is not None:
        x0, y0, x1, y1 = item.box
        mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    if item.mask is None:
        return mask
    if item.mask.startswith("array:"):
        value = np.asarray(arrays[config.masks_key][int(item.mask[6:])]).astype(bool)
    else:
        try:
            with Image.open(item.mask) as img:
                img = img.convert("L")
                if img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.NEAREST)
                value = np.asarray(img) > 127
        except OSError as exc:
            raise ImageReadError(f"cannot read mask {quote(item.mask)}: {exc}") from None
    if value.shape != size:
        raise ImageReadError(f"mask of {quote(item.id)} has shape {value.shape}, the inputs {size}")
    return mask | value
