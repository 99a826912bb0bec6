"""How many input rows one session run may take: a memory budget (by default a quarter of the
memory available when the engine is made) over what one row of the model holds — every tensor
of the graph as measured at import, which is about twice what ONNX Runtime's planner keeps at
once for a forward + backward run (ResNet-50 at 224²: 106 MB summed, 46 MB a row measured by
``ru_maxrss``), so the estimate errs on the safe side."""

from __future__ import annotations

import os
import re

import numpy as np

from onnxlens.errors import OnnxLensError, quote

#: share of the available memory that one session run may take when no budget is given
DEFAULT_SHARE = 0.25
#: rows per run are capped here even when memory allows more (larger runs are not faster on CPU)
MAX_ROWS = 64
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def available_bytes() -> int:
    """The memory available to new work: Linux's MemAvailable, else the free physical pages."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 4 << 30


def parse_size(value: int | str) -> int:
    """Bytes from an int or a size such as ``512M``, ``2G`` or ``1.5g``; one line naming a bad one."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value), re.IGNORECASE)
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()]) if match else 0
    if size <= 0:
        raise OnnxLensError(f"a memory budget is a positive size such as 512M or 2G, got {quote(str(value))}")
    return size


def row_bytes(shapes: dict[str, tuple], itemsize: int = 4) -> int:
    """What one input row holds across the graph's measured tensors (the batch axis and any
    symbolic axis left out)."""
    return itemsize * sum(int(np.prod([d for d in shape[1:] if isinstance(d, int)], dtype=np.int64))
                          for shape in shapes.values() if shape)


def rows_within(budget: int | None, per_row: int) -> int:
    """Rows per session run: as many as ``budget`` (None: :data:`DEFAULT_SHARE` of the available
    memory) holds at ``per_row`` bytes each, at least 1 and at most :data:`MAX_ROWS`."""
    budget = budget if budget is not None else int(DEFAULT_SHARE * available_bytes())
    return int(max(1, min(MAX_ROWS, budget // max(per_row, 1))))
