"""Normalization layers at inference: BatchNormalization is a per-channel affine map;
Instance and Layer normalization differentiate through their statistics."""

from __future__ import annotations

from onnxlens.graph_ops.backward.registry import vjp_rule


def _channel_shape(rank: int) -> list[int]:
    return [-1] + [1] * (rank - 2)


@vjp_rule("BatchNormalization")
def batch_norm(ctx):
    g = ctx.g
    x, scale, _, _, var = ctx.inputs[:5]
    if any(ctx.needs[1:]):
        ctx.unsupported("statistics or affine parameters depend on the differentiated input")
    factor = g.op("Div", scale, g.op("Sqrt", g.op("Add", var, g.const(ctx.attr("epsilon", 1e-5)))))
    factor = g.op("Reshape", factor, g.ints(_channel_shape(len(ctx.shape(x))), "shape"))
    return [g.op("Mul", ctx.ct, factor)]


def _normalized_backward(ctx, x, gs, axes, eps):
    """dx of (x − mean) / sqrt(var + eps) over ``axes``, given gs = cotangent × scale."""
    g = ctx.g
    ax = g.ints(axes, "axes")
    centered = g.op("Sub", x, g.op("ReduceMean", x, ax, keepdims=1))
    var = g.op("ReduceMean", g.op("Mul", centered, centered), ax, keepdims=1)
    rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(eps))))
    xhat = g.op("Mul", centered, rstd)
    mean_gs = g.op("ReduceMean", gs, ax, keepdims=1)
    mean_gsx = g.op("ReduceMean", g.op("Mul", gs, xhat), ax, keepdims=1)
    return g.op("Mul", rstd, g.op("Sub", g.op("Sub", gs, mean_gs), g.op("Mul", xhat, mean_gsx)))


@vjp_rule("InstanceNormalization")
def instance_norm(ctx):
    g, (x, scale, _) = ctx.g, ctx.inputs
    if any(ctx.needs[1:]):
        ctx.unsupported("scale or bias depend on the differentiated input")
    rank = len(ctx.shape(x))
    gs = g.op("Mul", ctx.ct, g.op("Reshape", scale, g.ints(_channel_shape(rank), "shape")))
    return [_normalized_backward(ctx, x, gs, list(range(2, rank)), ctx.attr("epsilon", 1e-5)), None, None]


@vjp_rule("LayerNormalization")
def layer_norm(ctx):
    g, x = ctx.g, ctx.inputs[0]
    if any(ctx.needs[1:]):
        ctx.unsupported("scale or bias depend on the differentiated input")
    rank = len(ctx.shape(x))
    axis = ctx.attr("axis", -1) % rank
    gs = g.op("Mul", ctx.ct, ctx.inputs[1])
    dx = _normalized_backward(ctx, x, gs, list(range(axis, rank)), ctx.attr("epsilon", 1e-5))
    return [dx]
