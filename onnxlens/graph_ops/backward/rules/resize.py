"""Resize is linear in its input and separable by axis: its cotangent contracts each resized
axis with that axis's interpolation matrix. The matrix comes from the same Resize applied to
an identity, so every mode and coordinate convention matches the forward op exactly."""

from __future__ import annotations

import numpy as np

from onnxlens.graph_ops.backward.registry import vjp_rule


@vjp_rule("Resize")
def resize(ctx):
    g, x = ctx.g, ctx.inputs[0]
    shape, out_shape = ctx.shape(x), ctx.shape(ctx.outputs[0])
    rank = len(shape)
    if len(ctx.inputs) > 1 and ctx.inputs[1] and ctx.const(ctx.inputs[1]) is not None and ctx.const(ctx.inputs[1]).size:
        ctx.unsupported("a region of interest (tf_crop_and_resize) is not supported")
    # the probe resizes one full-rank axis at a time, so a forward ``axes`` list does not apply
    attrs = {a.name: ctx.attr(a.name) for a in ctx.node.attribute if a.name != "axes"}
    ct = ctx.ct
    for axis in range(rank):
        n_in, n_out = shape[axis], out_shape[axis]
        if n_in == n_out and _scale(ctx, axis, rank) in (None, 1.0):
            continue
        if axis == 0 or isinstance(n_in, str):
            ctx.unsupported("resizing the batch axis is not supported")
        probe_shape = [1] * rank
        probe_shape[0], probe_shape[axis] = int(n_in), int(n_in)
        eye = g.const(np.eye(int(n_in)).reshape(probe_shape))
        scales = [1.0] * rank
        scales[axis] = _scale(ctx, axis, rank) or int(n_out) / int(n_in)
        sized = list(probe_shape)
        sized[axis] = int(n_out)
        uses_sizes = len(ctx.inputs) > 3 and ctx.inputs[3]
        resize_inputs = [eye, "", ""] + ([g.ints(sized, "sizes")] if uses_sizes else [])
        if not uses_sizes:
            resize_inputs[2] = g.const(scales, "scales", np.float32)  # Resize takes float32 scales
        mapped = g.op("Resize", *resize_inputs, **attrs)  # [i, …, o, …] = weight of input i in output o
        matrix = g.reshape(mapped, (int(n_in), int(n_out)))
        ct = g.along_axis(ct, g.op("Transpose", matrix, perm=[1, 0]), axis, rank)
    return [ct]


def _scale(ctx, axis, rank):
    if len(ctx.inputs) > 2 and ctx.inputs[2]:
        scales = ctx.const(ctx.inputs[2])
        if scales is not None and scales.size == rank:
            return float(scales[axis])
    return None

