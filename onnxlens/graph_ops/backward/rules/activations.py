"""Pointwise nonlinearities and softmax. Tie conventions follow PyTorch: ReLU passes nothing
at 0; LeakyReLU/PReLU/ELU use the negative branch at 0; Clip (ReLU6, hardtanh) passes only
strictly inside its bounds; HardSigmoid/HardSwish as torch's hardsigmoid/hardswish."""

from __future__ import annotations

import math

from onnxlens.graph_ops.backward.registry import vjp_rule


def _positive(ctx):
    """x > 0, read from the output where that is equivalent (ReLU, LeakyReLU with α > 0), so
    the forward pass need not keep the pre-activation: ONNX Runtime can then fuse Conv+ReLU."""
    reads_output = ctx.node.op_type == "Relu" or (ctx.node.op_type == "LeakyRelu" and ctx.attr("alpha", 0.01) > 0)
    return ctx.g.op("Greater", ctx.outputs[0] if reads_output else ctx.inputs[0], ctx.g.const(0.0))


@vjp_rule("Relu")
def relu(ctx):
    return [ctx.g.keep_where(ctx.ct, _positive(ctx))]


@vjp_rule("LeakyRelu")
def leaky_relu(ctx):
    g = ctx.g
    return [g.op("Where", _positive(ctx), ctx.ct, g.op("Mul", ctx.ct, g.const(ctx.attr("alpha", 0.01))))]


@vjp_rule("PRelu")
def prelu(ctx):
    g, (x, slope) = ctx.g, ctx.inputs
    dx = g.op("Where", _positive(ctx), ctx.ct, g.op("Mul", ctx.ct, slope))
    dslope = None
    if ctx.needs[1]:
        neg = g.op("Where", _positive(ctx), g.const(0.0), g.op("Mul", ctx.ct, x))
        dslope = g.reduce_to_shape(neg, ctx.shape(ctx.outputs[0]), ctx.shape(slope))
    return [dx, dslope]


def _exp_branch(ctx, scale: float, inner: float = 1.0):
    """ct where x > 0, else ct · scale · exp(inner · x)."""
    g, x = ctx.g, ctx.inputs[0]
    arg = x if inner == 1.0 else g.op("Mul", x, g.const(inner))
    return g.op("Where", _positive(ctx), ctx.ct, g.op("Mul", ctx.ct, g.op("Mul", g.const(scale), g.op("Exp", arg))))


@vjp_rule("Elu")
def elu(ctx):
    return [_exp_branch(ctx, ctx.attr("alpha", 1.0))]


@vjp_rule("Celu")
def celu(ctx):
    return [_exp_branch(ctx, 1.0, 1.0 / ctx.attr("alpha", 1.0))]


@vjp_rule("Selu")
def selu(ctx):
    g = ctx.g
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    return [g.op("Mul", _exp_branch(ctx, alpha), g.const(gamma))]


@vjp_rule("Sigmoid")
def sigmoid(ctx):
    g, y = ctx.g, ctx.outputs[0]
    return [g.op("Mul", ctx.ct, g.op("Mul", y, g.op("Sub", g.const(1.0), y)))]


@vjp_rule("Tanh")
def tanh(ctx):
    g, y = ctx.g, ctx.outputs[0]
    return [g.op("Mul", ctx.ct, g.op("Sub", g.const(1.0), g.op("Mul", y, y)))]


@vjp_rule("Gelu")
def gelu(ctx):
    """GELU (opset 20; Hendrycks & Gimpel, 2016, arXiv:1606.08415): x·Φ(x), or its tanh
    approximation 0.5·x·(1 + tanh(u)), u = √(2/π)(x + 0.044715x³)."""
    g, x = ctx.g, ctx.inputs[0]
    if ctx.attr("approximate", "none") == "tanh":
        c = math.sqrt(2 / math.pi)
        x2 = g.op("Mul", x, x)
        u = g.op("Mul", g.const(c), g.op("Add", x, g.op("Mul", g.const(0.044715), g.op("Mul", x2, x))))
        t = g.op("Tanh", u)
        du = g.op("Mul", g.const(c), g.op("Add", g.const(1.0), g.op("Mul", g.const(3 * 0.044715), x2)))
        sech2 = g.op("Sub", g.const(1.0), g.op("Mul", t, t))
        slope = g.op("Mul", g.const(0.5), g.op("Add", g.op("Add", g.const(1.0), t), g.op("Mul", g.op("Mul", x, sech2), du)))
    else:  # Φ(x) + x·φ(x)
        cdf = g.op("Mul", g.const(0.5), g.op("Add", g.const(1.0), g.op("Erf", g.op("Mul", x, g.const(1 / math.sqrt(2))))))
        pdf = g.op("Mul", g.const(1 / math.sqrt(2 * math.pi)), g.op("Exp", g.op("Mul", g.const(-0.5), g.op("Mul", x, x))))
        slope = g.op("Add", cdf, g.op("Mul", x, pdf))
    return [g.op("Mul", ctx.ct, slope)]


@vjp_rule("Softplus")
def softplus(ctx):
    return [ctx.g.op("Mul", ctx.ct, ctx.g.op("Sigmoid", ctx.inputs[0]))]


@vjp_rule("HardSigmoid")
def hard_sigmoid(ctx):
    g, x = ctx.g, ctx.inputs[0]
    alpha = ctx.attr("alpha", 0.2)
    z = g.op("Add", g.op("Mul", x, g.const(alpha)), g.const(ctx.attr("beta", 0.5)))
    inside = g.op("And", g.op("Greater", z, g.const(0.0)), g.op("Less", z, g.const(1.0)))
    return [g.op("Where", inside, g.op("Mul", ctx.ct, g.const(alpha)), g.const(0.0))]


@vjp_rule("HardSwish")
def hard_swish(ctx):
    g, x = ctx.g, ctx.inputs[0]
    middle = g.op("Mul", ctx.ct, g.op("Add", g.op("Div", x, g.const(3.0)), g.const(0.5)))
    upper = g.op("Where", g.op("Less", x, g.const(3.0)), middle, ctx.ct)
    return [g.op("Where", g.op("LessOrEqual", x, g.const(-3.0)), g.const(0.0), upper)]


@vjp_rule("Clip")
def clip(ctx):
    g, x = ctx.g, ctx.outputs[0]  # strictly inside the bounds ⟺ the output is (keeps Conv+Clip fused)
    inside = None
    for index, op in ((1, "Greater"), (2, "Less")):
        if len(ctx.inputs) > index and ctx.inputs[index]:
            test = g.op(op, x, ctx.inputs[index])
            inside = test if inside is None else g.op("And", inside, test)
    return [ctx.ct if inside is None else g.keep_where(ctx.ct, inside)]


@vjp_rule("Softmax")
def softmax(ctx):
    g, y = ctx.g, ctx.outputs[0]
    axis = ctx.g.ints([ctx.attr("axis", -1)], "axes")
    dot = g.op("ReduceSum", g.op("Mul", ctx.ct, y), axis, keepdims=1)
    return [g.op("Mul", y, g.op("Sub", ctx.ct, dot))]


@vjp_rule("LogSoftmax")
def log_softmax(ctx):
    g, y = ctx.g, ctx.outputs[0]
    total = g.op("ReduceSum", ctx.ct, g.ints([ctx.attr("axis", -1)], "axes"), keepdims=1)
    return [g.op("Sub", ctx.ct, g.op("Mul", g.op("Exp", y), total))]
