"""Arithmetic with numpy broadcasting, and simple unary functions, written over expressions:
the rule machinery emits only the cotangents that are needed and undoes broadcasting."""

from __future__ import annotations

import math

from onnxlens.graph_ops.backward.registry import elementwise_rule, vjp_rule


@elementwise_rule("Add", broadcasting=True)
def add(ct, a, b):
    return ct, ct


@elementwise_rule("Sub", broadcasting=True)
def sub(ct, a, b):
    return ct, -ct


@elementwise_rule("Mul", broadcasting=True)
def mul(ct, a, b):
    return ct * b, ct * a


@elementwise_rule("Div", broadcasting=True)
def div(ct, a, b, y):
    return ct / b, -((ct * y) / b)  # d(a/b)/db = -y/b


@elementwise_rule("Sum", broadcasting=True)
def sum_(ct, *terms):
    return (ct,) * len(terms)


@elementwise_rule("Identity", "Dropout")
def identity(ct, x, *_):
    return (ct,)


@vjp_rule("Cast")
def cast(ctx):
    return [ctx.g.op("Cast", ctx.ct, to=ctx.elem_type(ctx.inputs[0]))]


@elementwise_rule("Neg")
def neg(ct, x):
    return (-ct,)


@elementwise_rule("Abs")
def abs_(ct, x):
    return (ct * x.apply("Sign"),)  # sign(0) = 0, as torch


@elementwise_rule("Exp")
def exp(ct, x, y):
    return (ct * y,)


@elementwise_rule("Log")
def log(ct, x):
    return (ct / x,)


@elementwise_rule("Sqrt")
def sqrt(ct, x, y):
    return ((ct * 0.5) / y,)


@elementwise_rule("Reciprocal")
def reciprocal(ct, x, y):
    return (-(ct * (y * y)),)


@elementwise_rule("Sin")
def sin(ct, x):
    return (ct * x.apply("Cos"),)


@elementwise_rule("Cos")
def cos(ct, x):
    return (-(ct * x.apply("Sin")),)


@elementwise_rule("Erf")
def erf(ct, x):
    return (ct * (2 / math.sqrt(math.pi) * (-(x * x)).apply("Exp")),)


@elementwise_rule("Pow", broadcasting=True)
def pow_(ct, x, p, y, ctx):
    exponent = ctx.require_const(1, "the exponent") if ctx.needs[0] else None
    dx = None if exponent is None else ct * (x.apply("Pow", ctx.g.const(exponent - 1)) * ctx.g.const(exponent))
    return dx, ct * (y * x.apply("Log"))  # p · x^(p-1); y · ln x


@elementwise_rule("Min", "Max", broadcasting=True)
def min_max(ct, a, b, ctx):
    """The winner takes the cotangent; an exact tie splits it in half (as torch.maximum)."""
    if len(ctx.inputs) != 2:
        ctx.unsupported("only two inputs are differentiated")
    wins = a.apply("Greater" if ctx.node.op_type == "Max" else "Less", b).as_float()
    share_a = wins + a.apply("Equal", b).as_float() * 0.5
    return ct * share_a, ct * (1.0 - share_a)


@elementwise_rule("Where", broadcasting=True)
def where(ct, condition, a, b):
    return None, condition.where(ct, 0.0), condition.where(0.0, ct)
