"""Fold shape arithmetic into constants once tensor shapes are known.

Exporters compute split points, slice bounds and reshape targets at run time from ``Shape``
(e.g. ``x.chunk(2, dim=1)`` in ShuffleNet). Every such tensor whose value does not depend on
the batch size is replaced by an initializer, so rules that need constant attributes see them.
Each candidate is evaluated with ONNX's reference evaluator under two batch sizes; a value
that agrees under both is batch-independent.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxlens.graph_ops.index import replace_nodes
from onnxlens.graph_ops.tensors import constant_arrays

#: Ops evaluated during folding: shape and index arithmetic, never the heavy layers.
FOLDABLE_OPS = {
    "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Add", "Sub", "Mul",
    "Div", "Floor", "Ceil", "Neg", "Abs", "Max", "Min", "Mod", "Range", "Equal", "Greater", "Less",
    "Not", "And", "Or", "Where", "ConstantOfShape", "ReduceProd", "ReduceMin", "ReduceMax", "Identity",
    "Reshape", "Expand", "Tile", "Transpose",
}
_HYPOTHESES = (2, 3)  # batch sizes substituted for symbolic dimensions
_MAX_ELEMENTS = 1 << 16


def fold_shape_computations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return the model with batch-independent shape arithmetic folded, and how many nodes went."""
    graph = model.graph
    shapes = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    consts = constant_arrays(graph)
    values = [dict(consts) for _ in _HYPOTHESES]
    folded: set[int] = set()  # node positions (protobuf wrappers have no stable identity)
    for index, node in enumerate(graph.node):
        if node.op_type not in FOLDABLE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        results = [_evaluate(node, known, shapes, batch) for known, batch in zip(values, _HYPOTHESES)]
        if any(r is None for r in results):
            continue
        for known, result in zip(values, results):
            known.update(zip(node.output, result))
        if all(_same(a, b) for a, b in zip(*results)):
            folded.add(index)
    if not folded:
        return model, 0
    kept = [n for i, n in enumerate(graph.node) if i not in folded]
    needed = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_inits = []
    for index, node in enumerate(graph.node):
        if index in folded:
            new_inits += [numpy_helper.from_array(np.asarray(values[0][o]), o) for o in node.output if o in needed]
    replace_nodes(out.graph, kept)
    out.graph.initializer.extend(new_inits)
    names = {t.name for t in new_inits}
    kept_vi = [vi for vi in out.graph.value_info if vi.name not in names]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_vi)
    return out, len(folded)


def batch_multiple(dim: str, batch: int) -> int | None:
    """The size of a symbolic dim at batch size ``batch``: ``N`` is the batch, ``256*N`` a
    multiple of it; any other symbol (a size that changes otherwise) is unknown."""
    factor, _, name = dim.rpartition("*")
    if "?" in name:
        return None
    return int(factor) * batch if factor.isdigit() else batch


def _evaluate(node, known, shapes, batch):
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None or any(d is None for d in shape):
            return None
        sizes = [batch_multiple(d, batch) if isinstance(d, str) else d for d in shape]
        if any(d is None for d in sizes):
            return None
        dims = np.array(sizes, dtype=np.int64)
        start, end = 0, len(dims)
        for attr in node.attribute:
            start = attr.i if attr.name == "start" else start
            end = attr.i if attr.name == "end" else end
        return [dims[start:end]]
    inputs = [i for i in node.input if i]
    if not all(i in known for i in inputs) or any(np.asarray(known[i]).size > _MAX_ELEMENTS for i in inputs):
        return None
    try:
        results = ReferenceEvaluator(node).run(None, {i: known[i] for i in inputs})
    except Exception:  # an op the reference evaluator cannot run here is simply not folded
        return None
    return [np.asarray(r) for r in results]


def _same(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
