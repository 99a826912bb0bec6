"""DeepLIFT's Rescale rule (Shrikumar et al., 2017, arXiv:1704.02685) as rule overrides, in
Captum's formulation: the graph runs on the batch [x; x₀] (inputs, then their references), and
each nonlinearity passes cotangent × Δy/Δx instead of its derivative (the derivative where
|Δx| < eps).

MaxPool has two variants. ``DEEPLIFT_RESCALE`` routes Δy through both halves' arg-max with
Captum's ``maxpool`` formula, which keeps summation-to-delta exact. ``DEEPLIFT_RESCALE_CAPTUM``
keeps MaxPool's plain gradient: that is what Captum's DeepLift computes when a ReLU precedes the
MaxPool (the ReLU's hook reads the gradient before the MaxPool hook rewrites it, so the MaxPool
multipliers are dropped), and then summation-to-delta holds only approximately."""

from __future__ import annotations

from onnxlens.graph_ops.backward.overrides import RuleSet, by_op
from onnxlens.graph_ops.backward.registry import VJP_RULES
from onnxlens.graph_ops.backward.rules.pooling import route_to_argmax

#: Captum's supported nonlinearities (ReLU, ELU, Sigmoid, Tanh), plus their ONNX relatives.
NONLINEAR_OPS = ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh", "Softplus", "HardSigmoid",
                 "HardSwish", "Erf")
EPS = 1e-10


def _halves(ctx, tensor):
    return ctx.g.op("Split", tensor, axis=0, num_outputs=2, outputs=2)


def _doubled_difference(ctx, tensor):
    g = ctx.g
    first, second = _halves(ctx, tensor)
    delta = g.op("Sub", first, second)
    return g.op("Concat", delta, delta, axis=0)


def _rescaled(ctx, numerator, delta_in, fallback):
    g = ctx.g
    small = g.op("Less", g.op("Abs", delta_in), g.const(EPS))
    return g.op("Where", small, fallback, g.op("Div", numerator, delta_in))


def rescale_rule(ctx):
    """cotangent · Δy / Δx, both differences taken between the input and its reference."""
    g = ctx.g
    fallback = VJP_RULES[ctx.node.op_type](ctx)[0]
    delta_in = _doubled_difference(ctx, ctx.inputs[0])
    delta_out = _doubled_difference(ctx, ctx.outputs[0])
    return [_rescaled(ctx, g.op("Mul", ctx.ct, delta_out), delta_in, fallback)] + [None] * (len(ctx.inputs) - 1)


def maxpool_rule(ctx):
    """Captum's DeepLIFT MaxPool: Δy split at the cross maximum of both halves, routed through
    each half's arg-max, summed, and divided by Δx."""
    g = ctx.g
    fallback = VJP_RULES["MaxPool"](ctx)[0]  # also asks the forward MaxPool for its indices
    indices = ctx.outputs[1]
    y, y_ref = _halves(ctx, ctx.outputs[0])
    cross = g.op("Max", y, y_ref)
    delta_out = g.op("Concat", g.op("Sub", cross, y_ref), g.op("Sub", y, cross), axis=0)
    routed = route_to_argmax(ctx, indices, g.op("Mul", ctx.ct, delta_out))
    first, second = _halves(ctx, routed)
    total = g.op("Add", first, second)
    numerator = g.op("Concat", total, total, axis=0)
    return [_rescaled(ctx, numerator, _doubled_difference(ctx, ctx.inputs[0]), fallback)]


DEEPLIFT_RESCALE_CAPTUM = RuleSet(name="deeplift_rescale_captum").with_rule(by_op(*NONLINEAR_OPS), rescale_rule)
DEEPLIFT_RESCALE = RuleSet(DEEPLIFT_RESCALE_CAPTUM.entries, "deeplift_rescale").with_rule(by_op("MaxPool"), maxpool_rule)
