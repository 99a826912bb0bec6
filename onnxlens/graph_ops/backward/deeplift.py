"""DeepLIFT (Shrikumar et al., 2017, arXiv:1704.02685) as rule overrides. The graph runs on the
batch [x; x₀] (inputs, then their references) and the cotangent of the first half is the
multiplier.

Rescale, in Captum's formulation: each nonlinearity passes cotangent × Δy/Δx instead of its
derivative (the derivative where |Δx| < eps).

RevealCancel (the paper's Sec. 3.5.3): a linear unit z = Σ wᵢaᵢ + b splits Δz into
Δz⁺ = Σ 1{wᵢΔaᵢ > 0} wᵢΔaᵢ and Δz⁻ (Sec. 3.5.1); the nonlinearity y = f(z) after it gives
Δy⁺ = ½(f(z₀+Δz⁺) − f(z₀)) + ½(f(z₀+Δz⁻+Δz⁺) − f(z₀+Δz⁻)) (Δy⁻ likewise) and multipliers
m⁺ = Δy⁺/Δz⁺, m⁻ = Δy⁻/Δz⁻. In the doubled batch the cotangent of a linear unit's output
carries (c·m⁺; c·m⁻) in its two halves, and the linear rule routes each input through the
half that matches the sign of wᵢΔaᵢ. Units that are not Conv/Gemm/MatMul with constant
weights, or whose output is also read by other ops, count as one input (Δz⁺ = max(Δz, 0)),
where RevealCancel equals Rescale. Σ c·Δ is preserved by every rule, so summation-to-delta holds.

MaxPool has two variants. ``DEEPLIFT_RESCALE`` routes Δy through both halves' arg-max with
Captum's ``maxpool`` formula, which keeps summation-to-delta exact. ``DEEPLIFT_RESCALE_CAPTUM``
reproduces Captum's DeepLift: MaxPool keeps its plain gradient, which is what Captum computes when
a ReLU precedes the MaxPool (the ReLU's hook reads the gradient before the MaxPool hook rewrites
it, so the MaxPool multipliers are dropped), and so do the nonlinearities Captum has no rule for
(ReLU6 = Clip, HardSwish, …); summation-to-delta then holds only approximately."""

from __future__ import annotations

from dataclasses import replace

from onnxlens.graph_ops.backward.overrides import RuleSet, by_op
from onnxlens.graph_ops.backward.registry import VJP_RULES
from onnxlens.graph_ops.backward.relevance import LinearLayer
from onnxlens.graph_ops.backward.rules.pooling import route_to_argmax
from onnxlens.graph_ops.tensors import node_attr

#: Element-wise nonlinearities with one data input (Clip's bounds and PRelu's slope are constants).
NONLINEAR_OPS = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh", "Softplus", "HardSigmoid",
                 "HardSwish", "Clip", "Erf")
#: The ones Captum's DeepLift has a rule for (ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus).
CAPTUM_NONLINEAR_OPS = ("Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softplus")
EPS = 1e-10


def _halves(ctx, tensor):
    return ctx.g.op("Split", tensor, axis=0, num_outputs=2, outputs=2)


def _difference(ctx, tensor):
    first, second = _halves(ctx, tensor)
    return ctx.g.op("Sub", first, second)


def _doubled(ctx, tensor):
    return ctx.g.op("Concat", tensor, tensor, axis=0)


def _doubled_difference(ctx, tensor):
    return _doubled(ctx, _difference(ctx, tensor))


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
    return [_rescaled(ctx, g.op("Mul", ctx.ct, delta_out), delta_in, fallback)]


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


def _split_unit(ctx, z: str) -> LinearLayer | None:
    """The node computing ``z`` as a RevealCancel linear unit — a Conv, Gemm or MatMul with
    constant weights whose first input carries the batch — when only nonlinearities read
    ``z`` (so its cotangent is in the split form); else None."""
    node = ctx.producers.get(z)
    if node is None or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return None
    if any(c.op_type not in NONLINEAR_OPS for c in ctx.consumers.get(z, ())):
        return None
    weight = ctx.const(node.input[1])
    if weight is None or any(ctx.const(i) is None for i in node.input[2:] if i):
        return None
    if (node.op_type == "Gemm" and node_attr(node, "transA", 0)) or (node.op_type == "MatMul" and weight.ndim != 2):
        return None
    return LinearLayer(replace(ctx, node=node))


def reveal_cancel_rule(ctx):
    """RevealCancel at a nonlinearity: (c·m⁺; c·m⁻) for a linear unit's output, else Rescale."""
    g, z, y = ctx.g, ctx.inputs[0], ctx.outputs[0]
    layer = _split_unit(ctx, z)
    if layer is None:
        return rescale_rule(ctx)
    delta_a = _difference(ctx, layer.ctx.inputs[0])
    ap = g.op("Relu", delta_a)
    an = g.op("Sub", delta_a, ap)
    up = g.op("Add", layer.forward(ap, layer.pos(layer.weight), None), layer.forward(an, layer.neg(layer.weight), None))
    (z_now, z_ref), (y_now, y_ref) = _halves(ctx, z), _halves(ctx, y)
    down = g.op("Sub", g.op("Sub", z_now, z_ref), up)
    f = lambda t: g.op(ctx.node.op_type, t, *ctx.inputs[1:], **ctx.attrs())  # noqa: E731
    half = g.const(0.5)
    f_up, f_down = f(g.op("Add", z_ref, up)), f(g.op("Add", z_ref, down))
    dy_up = g.op("Mul", half, g.op("Add", g.op("Sub", f_up, y_ref), g.op("Sub", y_now, f_down)))
    dy_down = g.op("Mul", half, g.op("Add", g.op("Sub", f_down, y_ref), g.op("Sub", y_now, f_up)))
    gradient = _halves(ctx, VJP_RULES[ctx.node.op_type](ctx)[0])[0]
    c = _halves(ctx, ctx.ct)[0]
    m_up = _rescaled(ctx, g.op("Mul", c, dy_up), up, gradient)
    m_down = _rescaled(ctx, g.op("Mul", c, dy_down), down, gradient)
    return [g.op("Concat", m_up, m_down, axis=0)]


def reveal_cancel_linear_rule(ctx):
    """A linear unit under RevealCancel: the output cotangent's halves are (c⁺; c⁻), and input
    i takes c⁺ through the weights w with wΔaᵢ > 0 and c⁻ through the others."""
    layer = _split_unit(ctx, ctx.outputs[0])
    if layer is None:
        return VJP_RULES[ctx.node.op_type](ctx)
    g = ctx.g
    c_up, c_down = _halves(ctx, ctx.ct)
    wp, wn = layer.pos(layer.weight), layer.neg(layer.weight)
    rising = g.op("Add", layer.adjoint(c_up, wp), layer.adjoint(c_down, wn))
    falling = g.op("Add", layer.adjoint(c_up, wn), layer.adjoint(c_down, wp))
    positive = g.op("Greater", _difference(ctx, ctx.inputs[0]), g.const(0.0))
    return [_doubled(ctx, g.op("Where", positive, rising, falling))]


DEEPLIFT_RESCALE_CAPTUM = RuleSet(name="deeplift_rescale_captum").with_rule(by_op(*CAPTUM_NONLINEAR_OPS), rescale_rule)
DEEPLIFT_RESCALE = (RuleSet(name="deeplift_rescale").with_rule(by_op(*NONLINEAR_OPS), rescale_rule)
                    .with_rule(by_op("MaxPool"), maxpool_rule))
_REVEAL_CANCEL_GRADIENT_MAXPOOL = (RuleSet(name="deeplift_reveal_cancel_gradient_maxpool")
                                   .with_rule(by_op(*NONLINEAR_OPS), reveal_cancel_rule)
                                   .with_rule(by_op("Conv", "Gemm", "MatMul"), reveal_cancel_linear_rule))
DEEPLIFT_REVEAL_CANCEL = (RuleSet(_REVEAL_CANCEL_GRADIENT_MAXPOOL.entries, "deeplift_reveal_cancel")
                          .with_rule(by_op("MaxPool"), maxpool_rule))
#: (rule, maxpool) → rule set
DEEPLIFT_RULES = {
    ("rescale", "rescale"): DEEPLIFT_RESCALE, ("rescale", "gradient"): DEEPLIFT_RESCALE_CAPTUM,
    ("reveal_cancel", "rescale"): DEEPLIFT_REVEAL_CANCEL,
    ("reveal_cancel", "gradient"): _REVEAL_CANCEL_GRADIENT_MAXPOOL,
}
