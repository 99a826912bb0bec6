"""Make inner tensors graph outputs, so one session run returns them too."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from onnxlens.errors import InvalidModelError, quote


def expose(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose outputs also include ``tensors`` (order kept, duplicates
    and existing outputs skipped). Each tensor needs a known element type (from shape inference
    or the model's value_info)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    known = {vi.name: vi for vi in (*graph.input, *graph.value_info, *graph.output)}
    for t in graph.initializer:
        known.setdefault(t.name, onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    present = {o.name for o in graph.output}
    for name in tensors:
        if name in present:
            continue
        vi = known.get(name)
        if vi is None or not vi.type.tensor_type.elem_type:
            raise InvalidModelError(f"cannot expose tensor {quote(name)}: it is not in the graph or its type is unknown")
        graph.output.append(vi)
        present.add(name)
    return out
