"""Which inner tensors a layer method (CAM family, TCAV) can look at, and how their axes lie.

A feature map is a grid of positions aligned with the image, laid out channels-first
[N, C, h, w] (convolutions), channels-last [N, h, w, C] (ConvNeXt blocks, Swin stages, Keras)
or as tokens [N, T, D] / [T, N, D]: T = prefix + h·w patch tokens in row-major order after
the class and distillation tokens (ViT, DeiT, LeViT). The grid is recognised by its shape: its
steps over the image, H/h and W/w, agree (within ×1.5 for maps, which valid paddings and odd
sizes bend, ×1.15 for patch tokens, which have one patch size). Attention internals (queries,
keys, values, scores and weights, whose shapes can pass for a grid) are excluded by their
place in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx

from onnxlens.graph_ops.index import graph_index

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
_MAP_SPREAD, _TOKEN_SPREAD = 1.5, 1.15
_PREFIXES = (0, 1, 2)  # none, a class token, class and distillation tokens (DeiT)


@dataclass(frozen=True)
class MapLayout:
    """Where a feature map's rows, channels and grid lie."""

    kind: str  #: "channels_first", "channels_last" or "tokens"
    grid: tuple[int, int]
    prefix: int = 0  #: tokens before the patch grid
    batch_axis: int = 0  #: 1 for tokens laid out [T, N, D]

    def channels_first(self, a: np.ndarray) -> np.ndarray:
        """``a`` (an activation or its gradient in this layout) as [N, C, h, w]; tokens lose
        their prefix."""
        if self.kind == "channels_first":
            return a
        if self.kind == "channels_last":
            return a.transpose(0, 3, 1, 2)
        patches = np.moveaxis(a, self.batch_axis, 0)[:, self.prefix:]
        return patches.reshape(len(patches), *self.grid, -1).transpose(0, 3, 1, 2)

    def __str__(self) -> str:
        h, w = self.grid
        if self.kind == "tokens":
            return f"tokens {self.prefix}+{h}×{w}" + (" (batch second)" if self.batch_axis else "")
        return f"{self.kind.replace('_', '-')} {h}×{w}"


def _spread(h: int, w: int, size: tuple[int, int]) -> float:
    """How far the grid's steps over the image disagree between the axes (1 = equal); inf for
    a grid that is no grid (one position, or larger than the image)."""
    height, width = size
    if h * w <= 1 or h > height or w > width:
        return float("inf")
    step_h, step_w = height / h, width / w
    return max(step_h, step_w) / min(step_h, step_w)


def token_grid(tokens: int, size: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
    """(prefix, grid) of ``tokens`` tokens on an image of ``size``: the best-aligned split."""
    found = []
    for prefix in _PREFIXES:
        n = tokens - prefix
        for h in range(2, n // 2 + 1):
            if n % h == 0 and n // h >= 2 and (spread := _spread(h, n // h, size)) <= _TOKEN_SPREAD:
                found.append((spread, prefix, (h, n // h)))
    return min(found)[1:] if found else None


def map_layout(shape: tuple, batch, size: tuple[int, int]) -> MapLayout | None:
    """The layout of a tensor of ``shape`` holding ``batch`` rows of images of ``size`` (H, W),
    or None when it is no feature map."""
    if any(not isinstance(d, int) for i, d in enumerate(shape) if d != batch):
        return None
    if len(shape) == 4 and shape[0] == batch:
        options = [(_spread(*shape[2:], size), 0, "channels_first", shape[2:]),
                   (_spread(*shape[1:3], size), 1, "channels_last", shape[1:3])]
        spread, _, kind, grid = min(options)
        return MapLayout(kind, tuple(grid)) if spread <= _MAP_SPREAD else None
    if len(shape) == 3:
        for batch_axis in (0, 1):
            if shape[batch_axis] == batch and (split := token_grid(shape[1 - batch_axis], size)):
                return MapLayout("tokens", split[1], split[0], batch_axis)
    return None


class FeatureMap(NamedTuple):
    name: str
    shape: tuple
    layout: MapLayout


_RELAYOUTS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
#: ops that pass attention tensors along: reshaping, splitting, scaling, masking, normalizing
_ALONG = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Split", "Slice", "Gather", "Mul", "Div", "Add", "Sub",
          "Softmax", "Cast", "Dropout", "Identity", "Where", "Flatten", "Expand"}


def attention_internals(graph: onnx.GraphProto, variable: set[str]) -> set[str]:
    """Tensors inside attention: around every product of two ``variable`` tensors (queries ×
    keys, weights × values), back through reshapes and scalings to the projections that made
    its operands (their outputs included) and forward to the projection that takes the merged
    heads out (its input included). A residual or gate (a second variable operand from
    outside) ends the walk."""
    wiring = graph_index(graph)
    inside: set[str] = set()

    def carries(node: onnx.NodeProto, t: str) -> bool:
        return node.op_type in _ALONG and all(i == t or i in inside or i not in variable for i in node.input)

    for node in graph.node:
        if node.op_type not in ("MatMul", "Einsum") or sum(i in variable for i in node.input) < 2:
            continue
        stack = [i for i in node.input if i in variable]
        while stack:  # back to the projections
            t = stack.pop()
            if t not in inside:
                inside.add(t)
                producer = wiring.producers.get(t)
                operands = [] if producer is None else [i for i in producer.input if i in variable]
                if producer is not None and producer.op_type in _ALONG and len(operands) == 1:
                    stack.extend(operands)
        stack = list(node.output)
        while stack:  # forward to the output projection
            t = stack.pop()
            inside.add(t)
            stack.extend(o for c in wiring.consumers_of(t) if carries(c, t) for o in c.output if o not in inside)
    return inside


def _batch(graph: onnx.GraphProto, input_name: str) -> int | str:
    """Axis 0 of the input as declared: a size or a symbol."""
    dim = next(vi for vi in graph.input if vi.name == input_name).type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else dim.dim_param


def _data_dependent(graph: onnx.GraphProto, input_name: str) -> set[str]:
    """Tensors that depend on the input's values (what follows Shape depends on its size alone)."""
    depends = {input_name}
    for node in graph.node:
        if node.op_type not in ("Shape", "Size") and any(i in depends for i in node.input):
            depends.update(node.output)
    return depends


def layer_candidates(model: onnx.ModelProto, input_name: str, score: str, size: tuple[int, int],
                     batch: int | str | None = None, aligned: bool = True) -> list[FeatureMap]:
    """Float feature maps (see :func:`map_layout`) with one row per input (axis 0 the input's
    batch, not, say, patches or windows folded into it) on a path from the input to ``score``,
    outside attention and not mere relayouts of another candidate, in data-flow (topological)
    order, with their measured shapes. ``size``:
    the image's (H, W); ``batch``: the size of axis 0 in the measured shapes, if not the one
    the input declares (a graph fed one row at a time). ``aligned=False``: instead, the 4-D
    tensors there whose grid is not aligned with the image (to name when there is no map)."""
    graph = model.graph
    batch = _batch(graph, input_name) if batch is None else batch
    infos = {vi.name: vi for vi in graph.value_info}
    producers = graph_index(graph).producers
    needed, stack = set(), [score]
    while stack:
        t = stack.pop()
        if t not in needed:
            needed.add(t)
            if t in producers:
                stack.extend(i for i in producers[t].input if i)
    depends = _data_dependent(graph, input_name)
    inside = attention_internals(graph, depends)
    out, names = [], set()
    for node in graph.node:
        if node.op_type in _RELAYOUTS and node.input[0] in names:
            continue  # the same values as a candidate already listed
        for name in node.output:
            vi = infos.get(name)
            if (name not in depends or name not in needed or name in inside or vi is None
                    or vi.type.tensor_type.elem_type not in _FLOAT):
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                         for d in vi.type.tensor_type.shape.dim)
            layout = map_layout(dims, batch, size)
            if aligned and layout is not None:
                out.append(FeatureMap(name, dims, layout))
                names.add(name)
            elif not aligned and layout is None and len(dims) == 4 and dims[0] == batch and None not in dims[1:]:
                out.append(FeatureMap(name, dims, MapLayout("channels_first", dims[2:])))
    return out


def attention_weights(model: onnx.ModelProto, input_name: str) -> list[str]:
    """The attention weights of every block, in data-flow order: Softmax outputs inside
    attention laid out [rows, heads, T, T] (rows: one per input, or windows folded into the
    batch, as in Swin)."""
    graph = model.graph
    inside = attention_internals(graph, _data_dependent(graph, input_name))
    infos = {vi.name: vi for vi in graph.value_info}
    found = []
    for node in graph.node:
        name = node.output[0] if node.op_type == "Softmax" else None
        if name in inside and name in infos:
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in infos[name].type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[2] == dims[3]:
                found.append(name)
    return found
