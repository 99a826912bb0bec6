"""Pools. MaxPool routes the cotangent to the arg-max the forward pass chose (its Indices
output; first maximum on ties, as PyTorch); AveragePool spreads it over each window with the
divisor ONNX Runtime and PyTorch use (count_include_pad 0/1, ceil_mode)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlens.graph_ops.backward.registry import vjp_rule
from onnxlens.graph_ops.backward.rules.geometry import window


def route_to_argmax(ctx, indices, values=None):
    """Add each output position's ``values`` (default: the cotangent) at the input position its
    flat MaxPool index names: the adjoint of max pooling, overlapping windows included."""
    g, x = ctx.g, ctx.inputs[0]
    flat = g.ints([-1], "flat")
    zeros = g.op("Reshape", g.zeros_like(x), flat)
    values = g.op("Reshape", values or ctx.ct, flat)
    half = g.float_dtype != np.float32
    if half:  # ONNX Runtime's CPU ScatterElements adds in float32 only
        zeros, values = (g.op("Cast", t, to=onnx.TensorProto.FLOAT) for t in (zeros, values))
    dx = g.op("ScatterElements", zeros, g.op("Reshape", indices, flat), values, axis=0, reduction="add")
    if half:
        dx = g.op("Cast", dx, to=g.float_type)
    return g.reshape_like(dx, x)


@vjp_rule("MaxPool")
def max_pool(ctx):
    if ctx.attr("storage_order", 0) != 0:
        ctx.unsupported("storage_order=1 is not supported")
    return [route_to_argmax(ctx, ctx.forward_output(1, "maxpool_indices"))]


@vjp_rule("GlobalMaxPool")
def global_max_pool(ctx):
    spatial = [int(d) for d in ctx.shape(ctx.inputs[0])[2:]]
    _, indices = ctx.g.op("MaxPool", ctx.inputs[0], outputs=2, kernel_shape=spatial)
    return [route_to_argmax(ctx, indices)]


@vjp_rule("GlobalAveragePool")
def global_average_pool(ctx):
    g, x = ctx.g, ctx.inputs[0]
    count = int(np.prod([int(d) for d in ctx.shape(x)[2:]]))
    return [g.op("Expand", g.op("Mul", ctx.ct, g.const(1.0 / count)), g.op("Shape", x))]


def _divisors(sizes, out_sizes, geo, include_pad: bool) -> np.ndarray:
    """The divisor of every output window, as a product of per-axis element counts."""
    per_axis = []
    for size, out, k, s, d, pb, pe in zip(sizes, out_sizes, geo.kernel, geo.strides, geo.dilations,
                                          geo.pads_begin, geo.pads_end):
        lo, hi = (-pb, size + pe) if include_pad else (0, size)
        taps = np.arange(out)[:, None] * s - pb + np.arange(k)[None, :] * d
        per_axis.append(((taps >= lo) & (taps < hi)).sum(axis=1))
    grid = per_axis[0]
    for counts in per_axis[1:]:
        grid = np.multiply.outer(grid, counts)
    return grid.astype(np.float64)


@vjp_rule("AveragePool")
def average_pool(ctx):
    g, x = ctx.g, ctx.inputs[0]
    geo = window(ctx, ctx.attr("kernel_shape"))
    sx, sy = ctx.shape(x), ctx.shape(ctx.outputs[0])
    sizes, out_sizes = [int(d) for d in sx[2:]], [int(d) for d in sy[2:]]
    divisor = _divisors(sizes, out_sizes, geo, bool(ctx.attr("count_include_pad", 0)))
    scaled = g.op("Mul", ctx.ct, g.const((1.0 / divisor)[None, None]))
    channels = int(sx[1])
    ones = g.const(np.ones((channels, 1, *geo.kernel)))
    dx = g.conv_transpose_to(scaled, ones, sizes, out_sizes, geo.kernel, geo.strides, geo.dilations,
                             geo.pads_begin, group=channels)
    return [dx]
