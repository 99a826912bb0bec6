"""Window geometry shared by convolutions and pools: explicit strides, dilations and pads."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]


def window(ctx, kernel) -> Window:
    """Geometry of a Conv/ConvTranspose-free window op on input 0, with ``auto_pad`` made
    explicit from the input's static spatial shape."""
    kernel = tuple(int(k) for k in kernel)
    n = len(kernel)
    strides = tuple(ctx.attr("strides", None) or [1] * n)
    dilations = tuple(ctx.attr("dilations", None) or [1] * n)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto == "NOTSET":
        pads = list(ctx.attr("pads", None) or [0] * (2 * n))
        return Window(kernel, strides, dilations, tuple(pads[:n]), tuple(pads[n:]))
    if auto == "VALID":
        return Window(kernel, strides, dilations, (0,) * n, (0,) * n)
    begin, end = [], []
    for size, k, s, d in zip(ctx.shape(ctx.inputs[0])[2:], kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return Window(kernel, strides, dilations, tuple(begin), tuple(end))
