"""Data movement: reshapes, permutations, slicing, gathering, padding, concatenation. Index
maps along one axis become a one-hot matrix contracted with ``Emitter.along_axis``."""

from __future__ import annotations

import numpy as np

from onnxlens.graph_ops.backward.registry import vjp_rule


@vjp_rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx):
    return [ctx.g.reshape_like(ctx.ct, ctx.inputs[0])]


@vjp_rule("Transpose")
def transpose(ctx):
    rank = len(ctx.shape(ctx.inputs[0]))
    perm = list(ctx.attr("perm", None) or reversed(range(rank)))
    return [ctx.g.op("Transpose", ctx.ct, perm=[int(i) for i in np.argsort(perm)])]


@vjp_rule("Expand")
def expand(ctx):
    return [ctx.g.reduce_to_shape(ctx.ct, ctx.shape(ctx.outputs[0]), ctx.shape(ctx.inputs[0])), None]


@vjp_rule("Concat")
def concat(ctx):
    g = ctx.g
    rank = len(ctx.shape(ctx.outputs[0]))
    axis = ctx.attr("axis") % rank
    if len(ctx.inputs) == 1:
        return [ctx.ct]
    sizes = [ctx.shape(i)[axis] for i in ctx.inputs]
    if all(isinstance(s, int) for s in sizes):
        sizes = g.ints(sizes, "sizes")
    else:  # along a symbolic (batch) axis: the sizes at run time
        at = g.ints([axis], "axis")
        sizes = g.op("Concat", *[g.op("Gather", g.op("Shape", i), at) for i in ctx.inputs], axis=0)
    parts = g.op("Split", ctx.ct, sizes, outputs=len(ctx.inputs), axis=axis)
    return [p if need else None for p, need in zip(parts, ctx.needs)]


@vjp_rule("Split")
def split(ctx):
    g = ctx.g
    rank = len(ctx.shape(ctx.inputs[0]))
    axis = ctx.attr("axis", 0) % rank
    pieces = [ct if ct is not None else g.zeros_like(out) for ct, out in zip(ctx.cts, ctx.outputs)]
    return [g.op("Concat", *pieces, axis=axis) if len(pieces) > 1 else pieces[0], None]


def _selection_matrix(picked: np.ndarray, size: int) -> np.ndarray:
    """(len(picked) × size) one-hot rows: row j selects input index picked[j] (−1: none)."""
    m = np.zeros((len(picked), size), np.float32)
    rows = np.nonzero(picked >= 0)[0]
    m[rows, picked[rows]] = 1.0
    return m


@vjp_rule("Slice")
def slice_(ctx):
    g, x = ctx.g, ctx.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    starts, ends = ctx.require_const(1, "starts"), ctx.require_const(2, "ends")
    axes = ctx.require_const(3, "axes") if len(ctx.inputs) > 3 and ctx.inputs[3] else np.arange(len(starts))
    steps = ctx.require_const(4, "steps") if len(ctx.inputs) > 4 and ctx.inputs[4] else np.ones(len(starts), int)
    ct = ctx.ct
    begin, end_pad = [0] * rank, [0] * rank
    strided = []
    for start, stop, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % rank
        size = int(shape[axis])
        picked = np.arange(size)[slice(int(start), int(stop), int(step))]
        if step == 1 and len(picked):
            begin[axis], end_pad[axis] = int(picked[0]), size - 1 - int(picked[-1])
        else:
            strided.append((axis, picked, size))
    for axis, picked, size in strided:
        ct = g.along_axis(ct, _selection_matrix(picked, size), axis, rank)
    if any(begin) or any(end_pad):
        ct = g.op("Pad", ct, g.ints(begin + end_pad, "pads"), mode="constant")
    return [ct]


#: entries of the dense selection matrix a Gather adjoint may build
_MAX_SELECTION = 1 << 24


@vjp_rule("Gather")
def gather(ctx):
    g, x = ctx.g, ctx.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axis = ctx.attr("axis", 0) % rank
    indices = ctx.require_const(1, "indices")
    size = int(shape[axis])
    ct = ctx.ct
    if indices.ndim == 0:
        ct = g.op("Unsqueeze", ct, g.ints([axis], "axes"))
    elif indices.ndim > 1:  # the indices' axes merged into one (as_strided's decomposition)
        if indices.size * size > _MAX_SELECTION:
            ctx.unsupported(f"{indices.size} indices into an axis of {size} exceed the dense adjoint's limit")
        ct = g.reshape(ct, (*shape[:axis], indices.size, *shape[axis + 1:]))
    picked = indices.reshape(-1).astype(np.int64) % size
    return [g.along_axis(ct, _selection_matrix(picked, size), axis, rank), None]


def _pad_source(n_out: int, size: int, before: int, mode: str) -> np.ndarray:
    """For each output position along one axis, the input index it copies (−1: the constant)."""
    pos = np.arange(n_out) - before
    if mode == "constant":
        return np.where((pos >= 0) & (pos < size), pos, -1)
    if mode == "edge":
        return np.clip(pos, 0, size - 1)
    if mode == "wrap":
        return pos % size
    period = 2 * (size - 1)  # reflect, without repeating the edge
    folded = np.abs(pos) % period if period else np.zeros_like(pos)
    return np.where(folded < size, folded, period - folded)


@vjp_rule("Pad")
def pad(ctx):
    g, x = ctx.g, ctx.inputs[0]
    shape, out_shape = ctx.shape(x), ctx.shape(ctx.outputs[0])
    rank = len(shape)
    pads = ctx.require_const(1, "pads").astype(np.int64)
    axes = (ctx.require_const(3, "axes") if len(ctx.inputs) > 3 and ctx.inputs[3] else np.arange(rank))
    axes = [int(a) % rank for a in axes]
    mode = ctx.attr("mode", "constant")
    ct = ctx.ct
    for i, axis in enumerate(axes):
        before, after = int(pads[i]), int(pads[i + len(axes)])
        if before == 0 and after == 0:
            continue
        size, n_out = int(shape[axis]), int(out_shape[axis])
        source = _pad_source(n_out, size, before, mode)
        ct = g.along_axis(ct, _selection_matrix(source, size), axis, rank)
    return [ct]


@vjp_rule("Tile")
def tile(ctx):
    g, x = ctx.g, ctx.inputs[0]
    shape = ctx.shape(x)
    repeats = ctx.require_const(1, "repeats")
    split = []
    for r, d in zip(repeats, shape):
        split += [int(r), d]
    summed = g.op("ReduceSum", g.reshape(ctx.ct, split), g.ints(range(0, 2 * len(shape), 2), "axes"), keepdims=0)
    return [summed, None]


def _block_layout(op: str, mode: str, shape, b: int):
    """(dims of the intermediate view, the permutation) of DepthToSpace / SpaceToDepth."""
    n, c, h, w = shape
    if op == "SpaceToDepth":
        return [n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4]
    if mode == "CRD":
        return [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
    return [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]


@vjp_rule("DepthToSpace", "SpaceToDepth")
def depth_space(ctx):
    g, x = ctx.g, ctx.inputs[0]
    view, perm = _block_layout(ctx.node.op_type, ctx.attr("mode", "DCR"), ctx.shape(x), ctx.attr("blocksize"))
    permuted = [view[p] for p in perm]
    back = g.op("Transpose", g.reshape(ctx.ct, permuted), perm=[int(i) for i in np.argsort(perm)])
    return [g.reshape_like(back, x)]
