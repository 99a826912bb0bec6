"""QuantizeLinear → DequantizeLinear (QDQ) pairs of int8 graphs, differentiated with the
clipped straight-through estimator of quantization-aware training (Bengio et al., 2013,
arXiv:1308.3432; Jacob et al., 2018, CVPR): the cotangent passes unchanged where
round(x / scale) + zero_point lies in the integer range and is zero where the quantizer
saturates — torch's ``fake_quantize_per_tensor_affine`` / ``…_per_channel_affine`` backward.

The quantized tensor carries a float cotangent in integer units: DequantizeLinear multiplies
it by the scale, QuantizeLinear divides by it and applies the range mask, so a pair passes
``ct · mask``. DynamicQuantizeLinear (dynamic int8) never saturates: it passes ``ct / scale``.
:func:`unclipped` swaps in the unclipped estimator (the mask dropped), for a
quantizer that saturates on the path to the target and so passes nothing back.
"""

from __future__ import annotations

import onnx

from onnxlens.graph_ops.backward.overrides import RuleSet, by_op
from onnxlens.graph_ops.backward.registry import vjp_rule
from onnxlens.graph_ops.quantization import INTEGER_RANGES, integer_type


def _along_axis(ctx, param: str, data: str) -> str:
    """A scale or zero point shaped to broadcast against ``data``: a scalar as it is, a
    per-channel vector along the node's ``axis``."""
    if ctx.attr("block_size", 0):
        ctx.unsupported("blocked quantization (block_size) has no straight-through rule")
    shape = ctx.shape(param)
    if len(shape) == 0 or int(shape[0]) == 1:
        return param
    rank = len(ctx.shape(data))
    axis = ctx.attr("axis", 1) % rank
    return ctx.g.op("Reshape", param, ctx.g.ints([-1 if i == axis else 1 for i in range(rank)], "per_channel"))


@vjp_rule("DequantizeLinear")
def dequantize_linear(ctx):
    """y = (q − zero_point) · scale."""
    return [ctx.g.op("Mul", ctx.ct, _along_axis(ctx, ctx.inputs[1], ctx.inputs[0])), None, None]


@vjp_rule("QuantizeLinear")
def quantize_linear(ctx):
    """q = saturate(round(x / scale) + zero_point); cotangent ct / scale inside the range."""
    g, x = ctx.g, ctx.inputs[0]
    zero_point = ctx.inputs[2] if len(ctx.inputs) > 2 and ctx.inputs[2] else None
    qtype = integer_type(ctx.node, ctx.elem_type(zero_point) if zero_point else None)
    if qtype not in INTEGER_RANGES:
        ctx.unsupported(f"quantization to {onnx.TensorProto.DataType.Name(qtype)} has no straight-through rule")
    scale = _along_axis(ctx, ctx.inputs[1], x)
    ct = g.op("Div", ctx.ct, scale)
    low, high = INTEGER_RANGES[qtype]
    level = g.op("Round", g.op("Div", x, scale))
    if len(ctx.inputs) > 2 and ctx.inputs[2]:
        zero = g.op("Cast", _along_axis(ctx, ctx.inputs[2], x), to=ctx.elem_type(x))
        level = g.op("Add", level, zero)
    inside = g.op("And", g.op("GreaterOrEqual", level, g.const(low, "qmin")),
                  g.op("LessOrEqual", level, g.const(high, "qmax")))
    return [g.keep_where(ct, inside), None, None]


@vjp_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx):
    """q = round(x / s) + zero_point with s and zero_point from x's own range, which q never
    leaves: ct / s. The scale and zero point are off the differentiated path (an observer's
    statistics)."""
    return [ctx.g.op("Div", ctx.ct, ctx.outputs[1])]


def quantize_linear_unclipped(ctx):
    """The unclipped straight-through estimator: ct / scale everywhere."""
    return [ctx.g.op("Div", ctx.ct, _along_axis(ctx, ctx.inputs[1], ctx.inputs[0])), None, None]


def unclipped(rules: RuleSet | None) -> RuleSet:
    """``rules`` (default: none) with QuantizeLinear differentiated by the unclipped estimator."""
    base = rules or RuleSet(name="default")
    return RuleSet(base.entries + ((by_op("QuantizeLinear"), quantize_linear_unclipped),), f"{base.name}+unclipped_ste")
