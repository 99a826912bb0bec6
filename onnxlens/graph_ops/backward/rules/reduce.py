"""Reductions over axes. ReduceMax/ReduceMin share the cotangent evenly among tied extremes
(as torch.amax/amin)."""

from __future__ import annotations

import numpy as np

from onnxlens.graph_ops.backward.registry import vjp_rule


def _axes(ctx) -> list[int]:
    rank = len(ctx.shape(ctx.inputs[0]))
    axes = ctx.require_const(1, "axes") if len(ctx.inputs) > 1 and ctx.inputs[1] else None
    if axes is None or axes.size == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(int(a) % rank for a in np.atleast_1d(axes))


def _kept(ctx, t, axes):
    """``t`` (shaped like the output) with the reduced axes present as size 1."""
    if ctx.attr("keepdims", 1) or not axes:
        return t
    return ctx.g.op("Unsqueeze", t, ctx.g.ints(axes, "axes"))


@vjp_rule("ReduceSum", "ReduceMean")
def reduce_sum_mean(ctx):
    g, x = ctx.g, ctx.inputs[0]
    axes = _axes(ctx)
    ct = _kept(ctx, ctx.ct, axes)
    if ctx.node.op_type == "ReduceMean" and axes:
        dims = [ctx.shape(x)[a] for a in axes]
        if all(isinstance(d, int) for d in dims):
            scale = g.const(1.0 / np.prod(dims))
        else:  # over a symbolic (batch) axis: |output| / |input| at run time
            scale = g.op("Div", *[g.op("Cast", g.op("Size", t), to=g.float_type) for t in (ctx.outputs[0], x)])
        ct = g.op("Mul", ct, scale)
    return [g.op("Expand", ct, g.op("Shape", x)), None]


@vjp_rule("ReduceMax", "ReduceMin")
def reduce_extreme(ctx):
    g, x = ctx.g, ctx.inputs[0]
    axes = _axes(ctx)
    hit = g.op("Cast", g.op("Equal", x, _kept(ctx, ctx.outputs[0], axes)), to=g.float_type)
    ties = g.op("ReduceSum", hit, g.ints(axes, "axes"), keepdims=1) if axes else hit
    return [g.op("Mul", g.op("Div", hit, ties), _kept(ctx, ctx.ct, axes)), None]


@vjp_rule("ReduceL2")
def reduce_l2(ctx):
    """d‖x‖/dx = x / ‖x‖, and 0 where the norm is 0 (as torch's vector_norm backward)."""
    g, x = ctx.g, ctx.inputs[0]
    axes = _axes(ctx)
    norm = _kept(ctx, ctx.outputs[0], axes)
    safe = g.op("Max", norm, g.const(np.finfo(g.float_dtype).tiny, "tiny"))
    return [g.op("Mul", g.op("Div", x, safe), _kept(ctx, ctx.ct, axes)), None]


@vjp_rule("ReduceL1")
def reduce_l1(ctx):
    g, axes = ctx.g, _axes(ctx)
    return [g.op("Mul", g.op("Sign", ctx.inputs[0]), _kept(ctx, ctx.ct, axes)), None]


@vjp_rule("ReduceSumSquare")
def reduce_sum_square(ctx):
    g, axes = ctx.g, _axes(ctx)
    return [g.op("Mul", g.op("Mul", ctx.inputs[0], g.const(2.0)), _kept(ctx, ctx.ct, axes)), None]
