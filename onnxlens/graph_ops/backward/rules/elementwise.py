"""Arithmetic with numpy broadcasting, and simple unary functions."""

from __future__ import annotations

import math

from onnxlens.graph_ops.backward.registry import vjp_rule


def _unbroadcast(ctx, ct, index):
    return ctx.g.reduce_to_shape(ct, ctx.shape(ctx.outputs[0]), ctx.shape(ctx.inputs[index]))


@vjp_rule("Add")
def add(ctx):
    return [_unbroadcast(ctx, ctx.ct, i) if ctx.needs[i] else None for i in range(2)]


@vjp_rule("Sub")
def sub(ctx):
    g = ctx.g
    return [_unbroadcast(ctx, ctx.ct, 0) if ctx.needs[0] else None,
            _unbroadcast(ctx, g.op("Neg", ctx.ct), 1) if ctx.needs[1] else None]


@vjp_rule("Mul")
def mul(ctx):
    g, (a, b) = ctx.g, ctx.inputs
    return [_unbroadcast(ctx, g.op("Mul", ctx.ct, b), 0) if ctx.needs[0] else None,
            _unbroadcast(ctx, g.op("Mul", ctx.ct, a), 1) if ctx.needs[1] else None]


@vjp_rule("Div")
def div(ctx):
    g, b = ctx.g, ctx.inputs[1]
    da = _unbroadcast(ctx, g.op("Div", ctx.ct, b), 0) if ctx.needs[0] else None
    db = None
    if ctx.needs[1]:  # d(a/b)/db = -y/b
        db = _unbroadcast(ctx, g.op("Neg", g.op("Div", g.op("Mul", ctx.ct, ctx.outputs[0]), b)), 1)
    return [da, db]


@vjp_rule("Sum")
def sum_(ctx):
    return [_unbroadcast(ctx, ctx.ct, i) if need else None for i, need in enumerate(ctx.needs)]


@vjp_rule("Identity", "Dropout")
def identity(ctx):
    return [ctx.ct]


@vjp_rule("Cast")
def cast(ctx):
    return [ctx.g.op("Cast", ctx.ct, to=ctx.elem_type(ctx.inputs[0]))]


@vjp_rule("Neg")
def neg(ctx):
    return [ctx.g.op("Neg", ctx.ct)]


@vjp_rule("Abs")
def abs_(ctx):
    return [ctx.g.op("Mul", ctx.ct, ctx.g.op("Sign", ctx.inputs[0]))]  # sign(0) = 0, as torch


@vjp_rule("Exp")
def exp(ctx):
    return [ctx.g.op("Mul", ctx.ct, ctx.outputs[0])]


@vjp_rule("Log")
def log(ctx):
    return [ctx.g.op("Div", ctx.ct, ctx.inputs[0])]


@vjp_rule("Sqrt")
def sqrt(ctx):
    g = ctx.g
    return [g.op("Div", g.op("Mul", ctx.ct, g.const(0.5)), ctx.outputs[0])]


@vjp_rule("Reciprocal")
def reciprocal(ctx):
    g, y = ctx.g, ctx.outputs[0]
    return [g.op("Neg", g.op("Mul", ctx.ct, g.op("Mul", y, y)))]


@vjp_rule("Sin")
def sin(ctx):
    return [ctx.g.op("Mul", ctx.ct, ctx.g.op("Cos", ctx.inputs[0]))]


@vjp_rule("Cos")
def cos(ctx):
    return [ctx.g.op("Neg", ctx.g.op("Mul", ctx.ct, ctx.g.op("Sin", ctx.inputs[0])))]


@vjp_rule("Erf")
def erf(ctx):
    g, x = ctx.g, ctx.inputs[0]
    slope = g.op("Mul", g.const(2 / math.sqrt(math.pi)), g.op("Exp", g.op("Neg", g.op("Mul", x, x))))
    return [g.op("Mul", ctx.ct, slope)]


@vjp_rule("Pow")
def pow_(ctx):
    g, x = ctx.g, ctx.inputs[0]
    dx = dp = None
    if ctx.needs[0]:  # p · x^(p-1)
        exponent = ctx.require_const(1, "the exponent")
        slope = g.op("Mul", g.const(exponent), g.op("Pow", x, g.const(exponent - 1)))
        dx = _unbroadcast(ctx, g.op("Mul", ctx.ct, slope), 0)
    if ctx.needs[1]:  # y · ln x
        dp = _unbroadcast(ctx, g.op("Mul", ctx.ct, g.op("Mul", ctx.outputs[0], g.op("Log", x))), 1)
    return [dx, dp]


@vjp_rule("Min", "Max")
def min_max(ctx):
    """The winner takes the cotangent; an exact tie splits it in half (as torch.maximum)."""
    if len(ctx.inputs) != 2:
        ctx.unsupported("only two inputs are differentiated")
    g, (a, b) = ctx.g, ctx.inputs
    wins = g.op("Greater" if ctx.node.op_type == "Max" else "Less", a, b)
    ties = g.op("Cast", g.op("Equal", a, b), to=g.float_type)
    share_a = g.op("Add", g.op("Cast", wins, to=g.float_type), g.op("Mul", ties, g.const(0.5)))
    da = g.op("Mul", ctx.ct, share_a)
    db = g.op("Mul", ctx.ct, g.op("Sub", g.const(1.0), share_a))
    return [_unbroadcast(ctx, da, 0) if ctx.needs[0] else None, _unbroadcast(ctx, db, 1) if ctx.needs[1] else None]


@vjp_rule("Where")
def where(ctx):
    g, (cond, _, _) = ctx.g, ctx.inputs
    zero = g.const(0.0)
    dx = _unbroadcast(ctx, g.op("Where", cond, ctx.ct, zero), 1) if ctx.needs[1] else None
    dy = _unbroadcast(ctx, g.op("Where", cond, zero, ctx.ct), 2) if ctx.needs[2] else None
    return [None, dx, dy]
