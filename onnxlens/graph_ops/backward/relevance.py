"""Layer-wise relevance propagation as rule overrides on the backward compiler.

Rules follow Zennit's definitions exactly (Anders et al., 2021, arXiv:2106.13200; zennit/rules.py):
the stabilizer adds ε·sign(z) with sign(0) = +1; z⁺ and γ are the generalized forms that split
inputs by sign; biases take part as Zennit's parameter modifiers say. The cotangent that flows
is the relevance R; a rule maps the relevance of a layer's output to that of its input.

- ε (Bach et al., 2015, PLoS ONE 10(7)): R_in = x ⊙ Wᵀ(R / stab(z)); ε = 0 is LRP-0.
- z⁺ (Montavon et al., 2017, Pattern Recognit. 65): positive parts (x⁺, W⁺, b⁺) and (x⁻, W⁻).
- γ (Montavon et al., 2019, LNCS 11700): weights W + γW^±, split by the sign of z.
- αβ (Bach et al., 2015): α·positive − β·negative contributions, α − β = 1.
- z^B (Montavon et al., 2017): inputs bounded by ``low``/``high``.
- flat, w² (Lapuschkin et al., 2019; Montavon et al., 2017): ones (or W²) as weights, inputs ones.
- norm: the ε rule without parameters, for residual sums and average pools; pass: activations
  and BatchNorm hand relevance on unchanged.
- layer_norm: LayerNormalization with its scale held constant (:func:`layer_norm_rule`).
- product: gates and normalizations written as Mul, Div and Sub (:func:`product_rule`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from onnxlens.graph_ops.backward.overrides import RuleSet, by_op, first_layer
from onnxlens.graph_ops.backward.registry import VJP_RULES, RuleContext
from onnxlens.graph_ops.backward.rules.geometry import window
from onnxlens.graph_ops.backward.rules.linear import conv_adjoint, gemm_adjoint

#: Ops whose relevance passes unchanged (Zennit's Activation and BatchNorm types).
PASS_OPS = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh", "Softplus", "Clip",
            "HardSigmoid", "HardSwish", "Gelu", "Softmax", "LogSoftmax", "BatchNormalization")
#: Elementwise ops of two operands with their own relevance rule (:func:`product_rule`).
PRODUCT_OPS = ("Mul", "Div", "Sub")
#: Ops that split relevance in proportion to their inputs' contributions: Zennit's Sum and
#: AvgPool types, plus the ReduceMean/ReduceSum that exporters emit for ``x.mean((2, 3))`` and
#: the Resize of a segmentation head's upsampling, linear in its data (Zennit sees no module
#: there and passes the gradient, which does not conserve relevance).
NORM_OPS = ("Add", "Sum", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Resize", "Upsample")


def stabilize(ctx, z: str, epsilon: float, nonnegative: bool = False) -> str:
    """z + ε·sign(z), with sign(0) = +1 (z + ε when z is known to be ≥ 0)."""
    g = ctx.g
    if nonnegative:
        return g.op("Add", z, g.const(epsilon))
    return g.op("Add", z, g.op("Where", g.op("GreaterOrEqual", z, g.const(0.0)), g.const(epsilon), g.const(-epsilon)))


def pass_rule(ctx):
    return [ctx.ct]


def separate_bias(ctx) -> tuple[str, np.ndarray] | None:
    """(output, bias) of the Add that adds a constant bias to this MatMul's or bias-free Conv's
    output when it is the only consumer: a batched dense layer, which exporters write as MatMul
    + Add, or a convolution whose bias a converter split off (dynamic int8 graphs). Its rules
    then take the bias into z as Gemm's and Conv's do (the Add passes relevance on)."""
    op = ctx.node.op_type
    if op not in ("MatMul", "Conv") or not any(ctx.const(i) is not None for i in ctx.inputs[:2]):
        return None
    if op == "Conv" and len(ctx.inputs) > 2 and ctx.inputs[2]:
        return None
    readers = ctx.consumers.get(ctx.outputs[0], ())
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    biases = [ctx.const(i) for i in readers[0].input if i != ctx.outputs[0]]
    if len(biases) != 1 or biases[0] is None:
        return None
    bias = biases[0]
    if op == "Conv":  # a per-channel [C, 1, 1] or [1, C, 1, 1] bias becomes Conv's [C]
        out = ctx.shape(ctx.outputs[0])
        shape = (1,) * (len(out) - bias.ndim) + bias.shape
        if len(shape) != len(out) or shape[0] != 1 or shape[1] != out[1] or any(d != 1 for d in shape[2:]):
            return None
        bias = bias.reshape(-1)
    return readers[0].output[0], bias


def epsilon_rule(epsilon: float, zero_bias: bool = False):
    """R_in_i = x_i ⊙ (∂z/∂x_i)ᵀ(R / stab(z)) for every needed input: the ε rule on a linear
    layer, Zennit's Norm rule on a sum or an average pool. ``zero_bias``: a layer's bias is
    left out of z (Zennit's ``zero_params='bias'``), so the layer passes on all it receives."""

    def rule(ctx: RuleContext):
        g = ctx.g
        if ctx.node.op_type == "Add" and any(ctx.const(i) is not None for i in ctx.inputs):
            return VJP_RULES["Add"](ctx)  # a bias add or a constant shift: relevance passes on
        biased = separate_bias(ctx)
        z = ctx.outputs[0] if biased is None or zero_bias else biased[0]
        op = ctx.node.op_type
        if zero_bias and op in ("Conv", "Gemm") and len(ctx.inputs) > 2 and ctx.inputs[2]:
            bias = LinearLayer(ctx).bias
            if op == "Conv":  # [C] against [N, C, spatial…]
                bias = bias.reshape(1, -1, *[1] * (len(ctx.shape(z)) - 2))
            z = g.op("Sub", z, g.const(bias, "lrp_bias", bias.dtype))
        scaled = g.op("Div", ctx.ct, stabilize(ctx, z, epsilon))
        grads = VJP_RULES[ctx.node.op_type](replace(ctx, cts=[scaled] + list(ctx.cts[1:])))
        return [g.op("Mul", x, d) if need and d is not None else None
                for x, d, need in zip(ctx.inputs, grads, ctx.needs)]

    return rule


def _computed_from(ctx, tensor: str, source: str, limit: int = 256) -> bool:
    """Whether ``tensor`` is computed from ``source`` (a walk back through at most ``limit``
    producers)."""
    seen, stack = set(), [tensor]
    while stack and len(seen) < limit:
        t = stack.pop()
        if t == source:
            return True
        if t not in seen:
            seen.add(t)
            producer = ctx.producers.get(t)
            if producer is not None:
                stack.extend(i for i in producer.input if i and ctx.const(i) is None)
    return False


def product_rule(stabilizer: float):
    """Mul, Div and Sub in relevance terms. With an operand that the input does not reach (a
    constant, a fed mask) the op rescales or shifts the other, which keeps all relevance. A product or quotient of a signal and a
    tensor computed from it — SiLU x·σ(x), GELU x·Φ(x), squeeze-excitation x·σ(f(x)), a
    LayerNorm's division by its deviation — gives the signal all relevance, the other factor
    acting as a constant weight: signal-take-all for gates (Arras et al., 2017,
    arXiv:1706.07206), the constant normalization scale of CP-LRP (Ali et al., 2022,
    arXiv:2202.07304) and AttnLRP's identity rule on activations (Achtibat et al., 2024,
    arXiv:2402.05602). A product of two independent variables splits relevance evenly
    (AttnLRP's uniform rule); a difference of variables — a LayerNorm's x − mean(x) among them —
    is linear and takes the ε rule, as in AttnLRP's and ``lxt``'s LayerNorm."""
    proportional = epsilon_rule(stabilizer)

    def rule(ctx: RuleContext):
        g, (a, b) = ctx.g, ctx.inputs[:2]
        out_shape = ctx.shape(ctx.outputs[0])

        def whole(i):
            return g.reduce_to_shape(ctx.ct, out_shape, ctx.shape(ctx.inputs[i])) if ctx.needs[i] else None

        def none(i):
            return g.zeros_like(ctx.inputs[i]) if ctx.needs[i] else None

        if not all(ctx.needs[:2]):  # a constant, or a tensor the input does not reach (a fed mask)
            return [whole(0), whole(1)]
        if ctx.node.op_type == "Sub":
            return proportional(ctx)
        if _computed_from(ctx, b, a):
            return [whole(0), none(1)]
        if _computed_from(ctx, a, b):
            return [none(0), whole(1)]
        half = g.op("Mul", ctx.ct, g.const(0.5))
        return [g.reduce_to_shape(half, out_shape, ctx.shape(x)) if need else None
                for x, need in zip(ctx.inputs, ctx.needs)]

    return rule


def layer_norm_rule(stabilizer: float):
    """LayerNormalization y = γ (x − mean x) / σ + β with σ held constant (AttnLRP, Achtibat et
    al., 2024, arXiv:2402.05602; ``lxt``'s ``layer_norm_forward``): the centering is linear and
    takes the ε rule, R_x = x ⊙ (w − mean w) / σ with w = γ ⊙ R / stab(y); β absorbs its share."""

    def rule(ctx: RuleContext):
        g, x = ctx.g, ctx.inputs[0]
        if any(ctx.needs[1:]):
            ctx.unsupported("scale or bias depend on the differentiated input")
        rank = len(ctx.shape(x))
        axes = g.ints(range(ctx.attr("axis", -1) % rank, rank), "axes")
        centered = g.op("Sub", x, g.op("ReduceMean", x, axes, keepdims=1))
        var = g.op("ReduceMean", g.op("Mul", centered, centered), axes, keepdims=1)
        rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(ctx.attr("epsilon", 1e-5)))))
        w = g.op("Mul", g.op("Div", ctx.ct, stabilize(ctx, ctx.outputs[0], stabilizer)), ctx.inputs[1])
        w = g.op("Sub", w, g.op("ReduceMean", w, axes, keepdims=1))
        return [g.op("Mul", x, g.op("Mul", w, rstd))]

    return rule


def _weights_of_softmax(ctx, tensor: str, limit: int = 8) -> bool:
    """Whether ``tensor`` is a Softmax output, perhaps reshaped, cast or dropped out since."""
    for _ in range(limit):
        producer = ctx.producers.get(tensor)
        if producer is None:
            return False
        if producer.op_type == "Softmax":
            return True
        if producer.op_type not in ("Reshape", "Transpose", "Cast", "Dropout", "Identity", "Squeeze", "Unsqueeze"):
            return False
        tensor = producer.input[0]
    return False


def variable_product(linear, stabilizer: float):
    """A MatMul of two variables (attention) in AttnLRP's terms (Achtibat et al., 2024,
    arXiv:2402.05602): softmax weights are constants, so the values take all relevance by the ε
    rule and the weights none; any other such product (queries × keys) splits it evenly, each
    side by the ε rule; an operand the input does not reach leaves all to the other. A MatMul with a constant operand keeps ``linear``'s rule."""
    proportional = epsilon_rule(stabilizer)

    def rule(ctx: RuleContext):
        if ctx.node.op_type != "MatMul" or any(ctx.const(i) is not None for i in ctx.inputs):
            return linear(ctx)
        g = ctx.g
        shares = proportional(ctx)
        if not all(ctx.needs):  # one operand fixed for this input: the other takes all
            return shares
        weights = [_weights_of_softmax(ctx, i) for i in ctx.inputs]
        if any(weights) and not all(weights):
            return [(g.zeros_like(x) if need else None) if w else r
                    for x, w, r, need in zip(ctx.inputs, weights, shares, ctx.needs)]
        return [None if r is None else g.op("Mul", r, g.const(0.5)) for r in shares]

    return rule


class LinearLayer:
    """A Conv, Gemm or MatMul (constant 2-D right operand; its bias from the Add that follows,
    :func:`separate_bias`) node's forward and adjoint with replaced parameters, inside a rule;
    ``zero_bias``: as if it had no bias."""

    def __init__(self, ctx, zero_bias: bool = False):
        self.ctx = ctx
        self.weight = ctx.require_const(1, "the weight")
        if ctx.node.op_type == "MatMul" and self.weight.ndim != 2:
            ctx.unsupported("relevance rules need a 2-D constant right operand")
        bias_name = ctx.inputs[2] if len(ctx.inputs) > 2 and ctx.inputs[2] else None
        self.bias = ctx.require_const(2, "the bias") if bias_name else None
        biased = separate_bias(ctx)
        if biased is not None:
            self.bias = biased[1]
        if ctx.node.op_type == "Gemm" and self.bias is not None:
            self.bias = self.bias * ctx.attr("beta", 1.0)
        if zero_bias:
            self.bias = None

    def forward(self, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        ctx, g = self.ctx, self.ctx.g
        attrs = ctx.attrs("beta")
        inputs = [x, g.const(weight, "lrp_weight", weight.dtype)]
        bias = None if bias is None else g.const(np.broadcast_to(bias, self.bias.shape).astype(weight.dtype),
                                                 "lrp_bias", weight.dtype)
        if ctx.node.op_type == "MatMul":
            out = g.op("MatMul", *inputs)
            return out if bias is None else g.op("Add", out, bias)
        return g.op(ctx.node.op_type, *inputs, *([bias] if bias is not None else []), **attrs)

    def adjoint(self, ct: str, weight: np.ndarray) -> str:
        op = self.ctx.node.op_type
        if op == "MatMul":
            return self.ctx.g.op("MatMul", ct, self.ctx.g.const(np.ascontiguousarray(weight.T), "lrp_weight_t",
                                                                 weight.dtype))
        return (conv_adjoint if op == "Conv" else gemm_adjoint)(self.ctx, ct, weight)

    def pos(self, a):
        return None if a is None else np.maximum(a, 0)

    def neg(self, a):
        return None if a is None else np.minimum(a, 0)


def _split_inputs(ctx):
    """(x⁺, x⁻); x⁻ is None when x is known non-negative (after a ReLU), so the rules skip
    the terms that would be zero."""
    g, x = ctx.g, ctx.inputs[0]
    if x in ctx.nonnegative:
        return x, None
    return g.op("Relu", x), g.op("Neg", g.op("Relu", g.op("Neg", x)))


def _signed_terms(layer, g, xp, xn, ct, w_for_pos, w_for_neg, bias, stabilizer, mask=None):
    """x⁺ ⊙ Aᵀs + x⁻ ⊙ Bᵀs with s = ct / stab(A x⁺ + B x⁻ + bias) (optionally masked)."""
    z = layer.forward(xp, w_for_pos, bias)
    if xn is not None:
        z = g.op("Add", z, layer.forward(xn, w_for_neg, None))
    nonnegative = ((w_for_pos >= 0).all() and (xn is None or (w_for_neg <= 0).all())
                   and (bias is None or (bias >= 0).all()))  # z⁺ and the α part: no sign to test
    s = g.op("Div", ct, stabilize(layer.ctx, z, stabilizer, nonnegative))
    if mask is not None:
        s = g.op("Mul", mask, s)
    out = g.op("Mul", xp, layer.adjoint(s, w_for_pos))
    return out if xn is None else g.op("Add", out, g.op("Mul", xn, layer.adjoint(s, w_for_neg)))


def zplus_rule(stabilizer: float = 1e-6, zero_bias: bool = False):
    def rule(ctx):
        layer, g = LinearLayer(ctx, zero_bias), ctx.g
        xp, xn = _split_inputs(ctx)
        wp, wn = layer.pos(layer.weight), layer.neg(layer.weight)
        return [_signed_terms(layer, g, xp, xn, ctx.ct, wp, wn, layer.pos(layer.bias), stabilizer)]

    return rule


def alpha_beta_rule(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6, zero_bias: bool = False):
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise ValueError(f"alpha and beta must be non-negative with alpha - beta = 1, got {alpha}, {beta}")

    def rule(ctx):
        layer, g = LinearLayer(ctx, zero_bias), ctx.g
        xp, xn = _split_inputs(ctx)
        wp, wn = layer.pos(layer.weight), layer.neg(layer.weight)

        positive = _signed_terms(layer, g, xp, xn, ctx.ct, wp, wn, layer.pos(layer.bias), stabilizer)
        negative = _signed_terms(layer, g, xp, xn, ctx.ct, wn, wp, layer.neg(layer.bias), stabilizer)
        return [g.op("Sub", g.op("Mul", positive, g.const(alpha)), g.op("Mul", negative, g.const(beta)))]

    return rule


def gamma_rule(gamma: float = 0.25, stabilizer: float = 1e-6, zero_bias: bool = False):
    def rule(ctx):
        layer, g = LinearLayer(ctx, zero_bias), ctx.g
        xp, xn = _split_inputs(ctx)
        w, b = layer.weight, layer.bias
        up = lambda a: None if a is None else a + gamma * np.maximum(a, 0)  # noqa: E731
        down = lambda a: None if a is None else a + gamma * np.minimum(a, 0)  # noqa: E731
        z = ctx.outputs[0]

        def part(w_pos_in, w_neg_in, bias, sign_op):
            mask = g.op("Cast", g.op(sign_op, z, g.const(0.0)), to=g.float_type)
            return _signed_terms(layer, g, xp, xn, ctx.ct, w_pos_in, w_neg_in, bias, stabilizer, mask)

        return [g.op("Add", part(up(w), down(w), up(b), "Greater"), part(down(w), up(w), down(b), "Less"))]

    return rule


def zbox_rule(low, high, stabilizer: float = 1e-6, zero_bias: bool = False):
    def rule(ctx):
        layer, g = LinearLayer(ctx, zero_bias), ctx.g
        x = ctx.inputs[0]
        bounds = []
        for value in (low, high):
            arr = np.asarray(value, dtype=np.float32)
            bounds.append(g.op("Expand", g.const(arr.reshape(arr.shape or ()), "bound"), g.op("Shape", x)))
        lo, hi = bounds
        w, b = layer.weight, layer.bias
        z = g.op("Sub", g.op("Sub", layer.forward(x, w, b), layer.forward(lo, layer.pos(w), layer.pos(b))),
                 layer.forward(hi, layer.neg(w), layer.neg(b)))
        s = g.op("Div", ctx.ct, stabilize(ctx, z, stabilizer))
        r = g.op("Sub", g.op("Sub", g.op("Mul", x, layer.adjoint(s, w)), g.op("Mul", lo, layer.adjoint(s, layer.pos(w)))),
                 g.op("Mul", hi, layer.adjoint(s, layer.neg(w))))
        return [r]

    return rule


def _constant_input_rule(transform, keep_bias: bool, stabilizer: float):
    """Flat and w²: inputs replaced by ones, weights by ``transform(W)``; no input factor."""

    def rule(ctx):
        layer, g = LinearLayer(ctx), ctx.g
        ones = g.op("Add", g.zeros_like(ctx.inputs[0]), g.const(1.0))
        w = transform(layer.weight)
        b = transform(layer.bias) if keep_bias and layer.bias is not None else None
        s = g.op("Div", ctx.ct, stabilize(ctx, layer.forward(ones, w, b), stabilizer))
        return [layer.adjoint(s, w)]

    return rule


def flat_rule(stabilizer: float = 1e-6):
    general = _constant_input_rule(np.ones_like, keep_bias=False, stabilizer=stabilizer)

    def rule(ctx):
        if ctx.node.op_type != "Conv" or ctx.attr("group", 1) != 1:
            return general(ctx)
        return _flat_conv(ctx, stabilizer)

    return rule


def _flat_conv(ctx, stabilizer):
    """The flat rule on an ungrouped convolution without the two full-size convolutions: with
    all weights and inputs one, z at an output position is C_in × (the kernel taps inside the
    input), a constant computed here; and every input channel receives the same relevance,
    the adjoint of a one-channel all-ones kernel applied to the channel sum of R / stab(z)."""
    g, x = ctx.g, ctx.inputs[0]
    weight = ctx.require_const(1, "the weight")
    geo = window(ctx, weight.shape[2:])
    z = np.float64(weight.shape[1])
    for axis, (size, out) in enumerate(zip(ctx.shape(x)[2:], ctx.shape(ctx.outputs[0])[2:])):
        taps = (np.arange(out)[:, None] * geo.strides[axis] - geo.pads_begin[axis]
                + np.arange(geo.kernel[axis])[None, :] * geo.dilations[axis])
        counts = ((taps >= 0) & (taps < size)).sum(axis=1).astype(np.float64)
        z = np.multiply.outer(z, counts) if axis else z * counts
    z = np.asarray(z, dtype=np.float64)
    stabilized = z + stabilizer  # z > 0 everywhere: sign(z) = +1
    scaled = g.op("Div", g.op("ReduceSum", ctx.ct, g.ints([1], "axes"), keepdims=1),
                  g.const(stabilized.reshape(1, 1, *stabilized.shape).astype(weight.dtype), "flat_z", weight.dtype))
    one_channel = conv_adjoint(ctx, scaled, np.ones((1, 1, *weight.shape[2:]), weight.dtype))
    return [g.op("Expand", one_channel, g.op("Shape", x))]


def wsquare_rule(stabilizer: float = 1e-6):
    return _constant_input_rule(np.square, keep_bias=True, stabilizer=stabilizer)


@dataclass(frozen=True)
class RuleParams:
    """The parameters a composite's rules take (Zennit's names and defaults)."""

    epsilon: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0
    beta: float = 1.0
    low: object = 0.0  #: z^B's lower input bound: a number or an array broadcastable to the input
    high: object = 1.0
    stabilizer: float = 1e-6
    #: biases left out of every layer's z (Zennit's ``zero_params='bias'``): each layer passes on
    #: all the relevance it receives, where otherwise biases absorb their share
    zero_bias: bool = False


#: Rule name → the rule, given the parameters.
RULES = {
    "pass": lambda p: pass_rule,
    "norm": lambda p: epsilon_rule(p.stabilizer),
    "product": lambda p: product_rule(p.stabilizer),
    "layer_norm": lambda p: layer_norm_rule(p.stabilizer),
    "epsilon": lambda p: epsilon_rule(p.epsilon, p.zero_bias),
    "zplus": lambda p: zplus_rule(p.stabilizer, p.zero_bias),
    "alpha_beta": lambda p: alpha_beta_rule(p.alpha, p.beta, p.stabilizer, p.zero_bias),
    "gamma": lambda p: gamma_rule(p.gamma, p.stabilizer, p.zero_bias),
    "flat": lambda p: flat_rule(p.stabilizer),
    "zbox": lambda p: zbox_rule(p.low, p.high, p.stabilizer, p.zero_bias),
}


@dataclass(frozen=True)
class Composite:
    """Which rule applies where, by name (Zennit's composites): convolutions, dense layers and,
    optionally, the first layer; activations and BatchNorm pass relevance, sums and average
    pools split it (the ``norm`` rule)."""

    conv: str
    dense: str
    first: str | None = None


COMPOSITES = {
    "epsilon": Composite(conv="epsilon", dense="epsilon"),
    "epsilon_plus": Composite(conv="zplus", dense="epsilon"),
    "epsilon_plus_flat": Composite(conv="zplus", dense="epsilon", first="flat"),
    "epsilon_alpha2_beta1": Composite(conv="alpha_beta", dense="epsilon"),
    "epsilon_alpha2_beta1_flat": Composite(conv="alpha_beta", dense="epsilon", first="flat"),
    "epsilon_gamma_box": Composite(conv="gamma", dense="epsilon", first="zbox"),
    "deep_taylor": Composite(conv="zplus", dense="zplus", first="zbox"),
}
PRESETS = tuple(COMPOSITES)


def composite(preset: str, **params) -> RuleSet:
    """The rule set of a named composite (``COMPOSITES``), equal in meaning to Zennit's, with
    the rules' ``params`` (``RuleParams``' fields)."""
    if preset not in COMPOSITES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen, p = COMPOSITES[preset], RuleParams(**params)
    named = {k: np.asarray(v).tolist() if k in ("low", "high") else v for k, v in vars(p).items()}
    rules = RuleSet(name=f"lrp:{preset}:{sorted(named.items())}")
    if chosen.first is not None:
        rules = rules.with_rule(first_layer(), RULES[chosen.first](p))
    return (rules.with_rule(by_op(*PASS_OPS), RULES["pass"](p))
            .with_rule(by_op(*NORM_OPS), RULES["norm"](p))
            .with_rule(by_op(*PRODUCT_OPS), RULES["product"](p))
            .with_rule(by_op("LayerNormalization"), RULES["layer_norm"](p))
            .with_rule(by_op("Conv"), RULES[chosen.conv](p))
            .with_rule(by_op("Gemm", "MatMul"), variable_product(RULES[chosen.dense](p), p.stabilizer)))
