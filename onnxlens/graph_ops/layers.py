"""Which inner tensors a layer method (CAM family, TCAV) can look at."""

from __future__ import annotations

import onnx

from onnxlens.graph_ops.index import graph_index

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def layer_candidates(model: onnx.ModelProto, input_name: str, score: str,
                     batch: int | str | None = None) -> list[tuple[str, tuple]]:
    """4-D float tensors with spatial size > 1 and one row per input (axis 0 the input's batch,
    not, say, patches folded into it) on a path from the input to ``score``, in data-flow
    (topological) order, with their measured shapes; a pooled vector laid out channels-last as
    [N, 1, 1, C] (ConvNeXt's head before its LayerNorm) is no feature map. The default layer of
    a CAM method is the last one: the deepest feature map before pooling. ``batch``: the size of axis 0 in the
    measured shapes, if not the one the input declares (a graph fed one row at a time)."""
    graph = model.graph
    if batch is None:
        image = next(vi for vi in graph.input if vi.name == input_name).type.tensor_type.shape.dim[0]
        batch = image.dim_value if image.HasField("dim_value") else image.dim_param
    infos = {vi.name: vi for vi in graph.value_info}
    producers = graph_index(graph).producers
    needed, stack = set(), [score]
    while stack:
        t = stack.pop()
        if t not in needed:
            needed.add(t)
            if t in producers:
                stack.extend(i for i in producers[t].input if i)
    depends = {input_name}
    out = []
    for node in graph.node:
        if not any(i in depends for i in node.input):
            continue
        for name in node.output:
            depends.add(name)
            vi = infos.get(name)
            if vi is None or name not in needed or vi.type.tensor_type.elem_type not in _FLOAT:
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                         for d in vi.type.tensor_type.shape.dim)
            if (len(dims) == 4 and dims[0] == batch and all(isinstance(d, int) for d in dims[2:])
                    and dims[2] * dims[3] > 1 and (dims[1] != 1 or dims[2] > 1)):
                out.append((name, dims))
    return out
