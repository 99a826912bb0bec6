"""Convolutions and matrix products: the linear layers. Their input cotangent is the
transposed operation; no weight gradients are built."""

from __future__ import annotations

from onnxlens.graph_ops.backward.registry import vjp_rule
from onnxlens.graph_ops.backward.rules.geometry import window


@vjp_rule("Conv")
def conv(ctx):
    if ctx.needs[1] or (len(ctx.needs) > 2 and ctx.needs[2]):
        ctx.unsupported("weights or bias depend on the differentiated input")
    return [conv_adjoint(ctx, ctx.ct)]


def conv_adjoint(ctx, ct: str, weight=None) -> str:
    """The node's convolution transposed, applied to ``ct``; ``weight`` (an array) replaces the
    node's weights when given (LRP rules use modified weights)."""
    x, w = ctx.inputs[0], ctx.inputs[1]
    geo = window(ctx, ctx.shape(w)[2:])
    weight = ctx.const(w) if weight is None else weight
    if weight is not None and all(s == 1 for s in geo.strides):
        dx = _stride1_adjoint(ctx, ct, weight, geo)
        if dx is not None:
            return dx
    weight_name = w if weight is None else ctx.g.const(weight, "weight", weight.dtype)
    return ctx.g.conv_transpose_to(
        ct, weight_name, ctx.shape(x)[2:], ctx.shape(ctx.outputs[0])[2:], geo.kernel, geo.strides,
        geo.dilations, geo.pads_begin, group=ctx.attr("group", 1),
    )


def _stride1_adjoint(ctx, ct, weight, geo):
    """A stride-1 convolution's adjoint is a convolution with the kernel flipped and its
    in/out channels swapped per group; a plain Conv runs faster than ConvTranspose in ONNX
    Runtime (it gets the blocked-layout kernels). None when the padding exceeds the kernel's
    reach (the ConvTranspose form handles that)."""
    group = ctx.attr("group", 1)
    m, c_per_group = weight.shape[:2]
    spatial = weight.shape[2:]
    flipped = weight[(slice(None), slice(None)) + (slice(None, None, -1),) * len(spatial)]
    grouped = flipped.reshape(group, m // group, c_per_group, *spatial).swapaxes(1, 2)
    adjoint = grouped.reshape(group * c_per_group, m // group, *spatial)
    reach = [d * (k - 1) for d, k in zip(geo.dilations, geo.kernel)]
    pads = [r - p for r, p in zip(reach, geo.pads_begin)] + [r - p for r, p in zip(reach, geo.pads_end)]
    if min(pads) < 0:
        return None
    return ctx.g.op("Conv", ct, ctx.g.const(adjoint, "adjoint_weight", weight.dtype), kernel_shape=list(spatial),
                    dilations=list(geo.dilations), pads=pads, group=group)


@vjp_rule("ConvTranspose")
def conv_transpose(ctx):
    """The adjoint of ConvTranspose is the Conv with the same weights and geometry."""
    w = ctx.inputs[1]
    if ctx.needs[1] or (len(ctx.needs) > 2 and ctx.needs[2]):
        ctx.unsupported("weights or bias depend on the differentiated input")
    if ctx.attr("auto_pad", "NOTSET") != "NOTSET" or ctx.attr("output_shape") is not None:
        ctx.unsupported("auto_pad / output_shape are not supported; export with explicit pads")
    kernel = ctx.shape(w)[2:]
    n = len(kernel)
    pads = list(ctx.attr("pads", None) or [0] * (2 * n))
    extra = list(ctx.attr("output_padding", None) or [0] * n)
    ends = [p - e for p, e in zip(pads[n:], extra)]
    g = ctx.g
    ct = ctx.ct
    if any(e < 0 for e in ends):  # output_padding beyond the end pads: crop it off first
        starts = [0] * n
        stops = [int(d) + min(e, 0) for d, e in zip(ctx.shape(ctx.outputs[0])[2:], ends)]
        ct = g.op("Slice", ct, g.ints(starts, "starts"), g.ints(stops, "ends"), g.ints(range(2, 2 + n), "axes"))
        ends = [max(e, 0) for e in ends]
    dx = g.op("Conv", ct, w, kernel_shape=list(kernel), strides=list(ctx.attr("strides", None) or [1] * n),
              dilations=list(ctx.attr("dilations", None) or [1] * n), pads=pads[:n] + ends,
              group=ctx.attr("group", 1))
    return [dx]


def gemm_adjoint(ctx, ct: str, weight=None) -> str:
    """The cotangent of the Gemm node's first input for ``ct``; ``weight`` (an array) replaces B."""
    g, b = ctx.g, ctx.inputs[1] if weight is None else ctx.g.const(weight, "weight", weight.dtype)
    alpha, ta, tb = ctx.attr("alpha", 1.0), ctx.attr("transA", 0), ctx.attr("transB", 0)
    return (g.op("Gemm", ct, b, alpha=alpha, transB=0 if tb else 1) if not ta
            else g.op("Gemm", b, ct, alpha=alpha, transA=tb, transB=1))


@vjp_rule("Gemm")
def gemm(ctx):
    g, ct = ctx.g, ctx.ct
    a = ctx.inputs[0]
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    ta, tb = ctx.attr("transA", 0), ctx.attr("transB", 0)
    da = db = dc = None
    if ctx.needs[0]:
        da = gemm_adjoint(ctx, ct)
    if ctx.needs[1]:
        db = (g.op("Gemm", a, ct, alpha=alpha, transA=0 if ta else 1) if not tb
              else g.op("Gemm", ct, a, alpha=alpha, transA=1, transB=ta))
    if len(ctx.inputs) > 2 and ctx.inputs[2] and ctx.needs[2]:
        scaled = ct if beta == 1.0 else g.op("Mul", ct, g.const(beta))
        dc = g.reduce_to_shape(scaled, ctx.shape(ctx.outputs[0]), ctx.shape(ctx.inputs[2]))
    return [da, db, dc]


def _swap_last(g, t, rank):
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return g.op("Transpose", t, perm=perm)


@vjp_rule("MatMul")
def matmul(ctx):
    g, ct = ctx.g, ctx.ct
    a, b = ctx.inputs
    sa, sb, so = ctx.shape(a), ctx.shape(b), ctx.shape(ctx.outputs[0])
    if len(sa) < 2 or len(sb) < 2:
        ctx.unsupported("1-D operands are not supported")
    da = db = None
    if ctx.needs[0]:
        da = g.reduce_to_shape(g.op("MatMul", ct, _swap_last(g, b, len(sb))), tuple(so[:-1]) + (sa[-1],), sa)
    if ctx.needs[1]:
        full = tuple(so[:-2]) + (sb[-2], so[-1])
        db = g.reduce_to_shape(g.op("MatMul", _swap_last(g, a, len(sa)), ct), full, sb)
    return [da, db]
