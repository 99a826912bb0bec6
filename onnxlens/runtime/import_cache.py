"""A disk cache of imported models: the canonical form with its measured shapes and its
verification, so that a second process explaining the same file skips what importing costs
(canonicalization, probe runs, shape measurement: 2–3 s on a ResNet-50 on 2 cores).

An entry is keyed by the file's sha256 (its external data included), the layout asked for and
the versions of onnxlens, onnx and ONNX Runtime; it holds ONNX files and one JSON document
(never pickles), is written into a fresh folder and renamed into place (concurrent processes
each write whole entries; the first rename wins), and the oldest entries go when the cache
grows past its cap. ``ONNXLENS_CACHE_DIR`` names the folder (default: ``onnxlens/imported``
in ``$XDG_CACHE_HOME``, else ``~/.cache``), or ``off``; ``ONNXLENS_CACHE_BYTES`` the cap
(default 2 GiB)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from onnxlens import __version__

DEFAULT_CAP_BYTES = 2 << 30
#: the fields of an ImportedModel kept as JSON (the models are ONNX files beside them)
FIELDS = ("original_opset", "canonical_notes", "shape_fixes", "verification", "measured_shapes", "fixed_batch",
          "batch_note", "precision", "twin_deviation", "probe_size")


def cache_dir() -> Path | None:
    """The cache folder, or None when ``ONNXLENS_CACHE_DIR`` is ``off``."""
    value = os.environ.get("ONNXLENS_CACHE_DIR", "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxlens" / "imported"


def entry_key(sha256: str, layout: str | None) -> str:
    import onnxruntime

    parts = (sha256, layout or "", __version__, onnx.__version__, onnxruntime.__version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def load_entry(sha256: str, layout: str | None) -> dict | None:
    """The cached fields of an import (``model`` and ``deployed`` as ModelProtos), or None."""
    root = cache_dir()
    folder = root / entry_key(sha256, layout) if root else None
    if folder is None or not (folder / "entry.json").is_file():
        return None
    try:
        fields = json.loads((folder / "entry.json").read_text())
        fields["model"] = onnx.load_model_from_string((folder / "model.onnx").read_bytes())
        deployed = folder / "deployed.onnx"
        fields["deployed"] = onnx.load_model_from_string(deployed.read_bytes()) if deployed.is_file() else None
        os.utime(folder)  # recently used: evicted last
    except Exception:  # noqa: BLE001 — a damaged entry (OSError, bad JSON, a protobuf DecodeError): import anew
        return None
    fields["measured_shapes"] = {k: tuple(v) for k, v in fields["measured_shapes"].items()}
    fields["probe_size"] = tuple(fields["probe_size"])
    for key in ("canonical_notes", "shape_fixes"):
        fields[key] = tuple(fields[key])
    return fields


def store_entry(sha256: str, layout: str | None, imported) -> None:
    """Keep ``imported`` (an ImportedModel) for later processes; a cache that cannot be
    written is skipped silently (importing works without it)."""
    root = cache_dir()
    if root is None:
        return
    folder = root / entry_key(sha256, layout)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            return
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        (partial / "model.onnx").write_bytes(imported.model.SerializeToString())
        if imported.deployed is not None:
            (partial / "deployed.onnx").write_bytes(imported.deployed.SerializeToString())
        (partial / "entry.json").write_text(json.dumps({k: getattr(imported, k) for k in FIELDS}))
        try:
            os.rename(partial, folder)
        except OSError:  # another process stored it first
            shutil.rmtree(partial, ignore_errors=True)
        evict(root, int(os.environ.get("ONNXLENS_CACHE_BYTES") or DEFAULT_CAP_BYTES))
    except (OSError, ValueError):
        return


def evict(root: Path, cap: int) -> None:
    """Remove the least recently used entries until the cache holds at most ``cap`` bytes."""
    entries = [(folder.stat().st_mtime, folder, sum(f.stat().st_size for f in folder.iterdir()))
               for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    total = sum(size for _, _, size in entries)
    for _, folder, size in sorted(entries):
        if total <= cap:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
