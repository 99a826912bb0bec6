"""Writing result files so that a crash never leaves half a file behind, and values as JSON."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def npz_bytes(**arrays) -> bytes:
    """Arrays as the bytes of a compressed .npz (to write with :func:`write_atomic`)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_json(path: Path, value) -> None:
    """JSON-ready ``value`` (numpy values converted) written atomically, NaN refused."""
    write_atomic(path, json.dumps(jsonable(value), indent=1, ensure_ascii=True, allow_nan=False).encode())


def jsonable(value):
    """numpy values and containers as plain Python (NaN and ±inf become None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
