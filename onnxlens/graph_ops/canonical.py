"""Validation and the canonical form every later transform can rely on.

Canonical form: local functions inlined; every weight an initializer (Constant nodes folded
in, initializers no longer listed as graph inputs); the default-domain opset at least
:data:`CANONICAL_OPSET`, with the ops whose signature changed rewritten; QOperator int8 nodes
in QDQ form; IR version within what ONNX Runtime loads; fresh shape inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx
import onnx.inliner
from onnx import numpy_helper

from onnxlens.errors import (
    CanonicalizationError,
    InvalidModelError,
    UnknownOperatorError,
    UnsupportedOpsetError,
    quote,
)
from onnxlens.graph_ops.index import replace_nodes
from onnxlens.graph_ops.opset_upgrade import CANONICAL_OPSET, UpgradeContext, upgrade_graph
from onnxlens.graph_ops.qoperator import qoperator_to_qdq
from onnxlens.graph_ops.tensors import constant_node_array, iter_nodes, stored_tensors, tensor_numel
from onnxlens.limits import check as check_limit

MIN_SUPPORTED_OPSET = 11
#: The newest default-domain opset and IR version that ONNX Runtime 1.31 loads.
MAX_SUPPORTED_OPSET = 26
MAX_IR_VERSION = 13
#: Opset 18 needs IR version 8 or newer.
_MIN_CANONICAL_IR = 8

_KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


@dataclass(frozen=True)
class CanonicalModel:
    """A model in canonical form and what was changed to get there."""

    model: onnx.ModelProto
    original_opset: int
    notes: tuple[str, ...]
    qoperator_rewritten: int = 0  #: QOperator nodes rewritten to QDQ form


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset for the default (``ai.onnx``) domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise InvalidModelError("model imports no opset for the default ONNX domain")


def validate_model(model: onnx.ModelProto, label: str = "model") -> None:
    """Refuse a model whose opset is unsupported, whose ops ONNX does not define, or that the
    ONNX checker rejects; each with one sentence naming the problem."""
    opset = default_opset(model)
    if not MIN_SUPPORTED_OPSET <= opset <= MAX_SUPPORTED_OPSET:
        raise UnsupportedOpsetError(
            f"{label} uses opset {opset}; supported opsets are {MIN_SUPPORTED_OPSET} to {MAX_SUPPORTED_OPSET}"
        )
    function_ops = {(f.domain, f.name) for f in model.functions}
    unknown: dict[str, list[str]] = {}
    for node in iter_nodes(model.graph):
        if (node.domain, node.op_type) in function_ops:
            continue
        domain = node.domain or ""
        known = domain in _KNOWN_DOMAINS and (
            domain == "com.microsoft" or onnx.defs.has(node.op_type, "" if domain == "ai.onnx" else domain)
        )
        if not known:
            key = f"{domain}::{node.op_type}" if domain else node.op_type
            unknown.setdefault(key, []).append(node.name)
    if unknown:
        parts = [f"{quote(op)} (node {quote(names[0])}{' and others' if len(names) > 1 else ''})"
                 for op, names in sorted(unknown.items())]
        raise UnknownOperatorError(f"{label} uses op types unknown to ONNX: {', '.join(parts)}")
    if not model.graph.output:
        raise InvalidModelError(f"{label} has no outputs")
    check_limit("graph_nodes", sum(1 for _ in iter_nodes(model.graph)), f"{label}'s graph")
    _check_loop_trips(model.graph, label)
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        elem = vi.type.tensor_type.elem_type
        if vi.type.HasField("tensor_type") and elem not in onnx.TensorProto.DataType.values():
            raise InvalidModelError(f"{label}: tensor {quote(vi.name)} is declared with data type {elem}, "
                                    "which ONNX does not define")
    for tensor in stored_tensors(model):
        _check_tensor(tensor, label)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InvalidModelError(f"{label} fails the ONNX checker: {_first_line(exc)}") from None


def _check_loop_trips(graph: onnx.GraphProto, label: str) -> None:
    """A Loop whose trip count is a stored constant stays within the ``loop_trips`` limit (a
    trip count computed at run time is bounded by the model's own data)."""
    stored = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in iter_nodes(graph) if n.op_type == "Constant" and n.output}
    for node in iter_nodes(graph):
        if node.op_type != "Loop" or not node.input:
            continue
        name = node.input[0]
        trips = (numpy_helper.to_array(stored[name]) if name in stored
                 else constant_node_array(constants[name]) if name in constants else None)
        if trips is not None and trips.size == 1:
            check_limit("loop_trips", int(trips.reshape(-1)[0]), f"{label}: Loop node {quote(node.name)}")


_PACKED_4BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
                *([onnx.TensorProto.FLOAT4E2M1] if hasattr(onnx.TensorProto, "FLOAT4E2M1") else [])}


def _check_tensor(tensor: onnx.TensorProto, label: str) -> None:
    """A stored tensor whose data type ONNX defines, not segmented, and whose raw bytes fill
    exactly its declared shape."""
    name = quote(tensor.name or "(unnamed)")
    if tensor.data_type not in onnx.TensorProto.DataType.values() or tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise InvalidModelError(f"{label}: tensor {name} has data type {tensor.data_type}, which ONNX does not define")
    if tensor.HasField("segment"):
        raise InvalidModelError(f"{label}: tensor {name} is stored in segments, which onnxlens does not read")
    if any(d < 0 for d in tensor.dims):
        raise InvalidModelError(f"{label}: tensor {name} has a negative dimension {list(tensor.dims)}")
    if not tensor.raw_data or tensor.data_type == onnx.TensorProto.STRING:
        return
    count = tensor_numel(tensor)
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    expected = (count + 1) // 2 if tensor.data_type in _PACKED_4BIT else count * itemsize
    if len(tensor.raw_data) != expected:
        raise InvalidModelError(
            f"{label}: tensor {name} holds {len(tensor.raw_data):,} bytes of data; its shape {list(tensor.dims)} "
            f"of {onnx.TensorProto.DataType.Name(tensor.data_type)} needs {expected:,}")


#: Runs a model and returns the rank of each named tensor (what ONNX shape inference left
#: unknown); supplied by the runtime layer, which can run models.
RankProbe = Callable[[onnx.ModelProto, Sequence[str]], dict[str, int]]


def canonicalize(model: onnx.ModelProto, rewrite_qoperator: bool = True,
                 probe_ranks: RankProbe | None = None) -> CanonicalModel:
    """Bring a validated model to canonical form (see the module docstring); QOperator nodes
    stay as they are when ``rewrite_qoperator`` is false. An opset upgrade that needs the rank
    of a tensor shape inference cannot type asks ``probe_ranks`` to measure it."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    notes: list[str] = []
    if out.functions:
        n = len(out.functions)
        out = onnx.inliner.inline_local_functions(out)
        del out.functions[:]
        notes.append(f"inlined {n} local function(s)")

    graph = out.graph
    weights = {t.name for t in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name not in weights]
    if len(kept_inputs) != len(graph.input):
        notes.append(f"dropped {len(graph.input) - len(kept_inputs)} initializer(s) listed as graph inputs")
        del graph.input[:]
        graph.input.extend(kept_inputs)

    negative = _symbolic_negative_dims(graph)
    if negative:
        notes.append(f"declared {negative} negative input/output dimension(s) symbolic")

    folded = _constants_to_initializers(graph)
    if folded:
        notes.append(f"moved {folded} Constant node(s) into initializers")

    opset = default_opset(out)
    if opset < CANONICAL_OPSET:
        ctx = UpgradeContext(out, opset, _ranks(out, probe_ranks))
        counts: dict[str, int] = {}
        upgrade_graph(graph, ctx, counts)
        graph.initializer.extend(ctx.new_initializers)
        for entry in out.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = CANONICAL_OPSET
        rewritten = ", ".join(f"{op}×{n}" for op, n in sorted(counts.items()))
        notes.append(f"opset {opset} → {CANONICAL_OPSET}" + (f" (rewrote {rewritten})" if rewritten else ""))

    rewritten = 0
    if rewrite_qoperator:
        out, rewritten = qoperator_to_qdq(out)
        graph = out.graph
        if rewritten:
            notes.append(f"rewrote {rewritten} integer-kernel node(s) to QDQ form (DequantizeLinear → float op"
                         " → QuantizeLinear)")

    ir = min(max(out.ir_version, _MIN_CANONICAL_IR), MAX_IR_VERSION)
    if ir != out.ir_version:
        notes.append(f"IR version {out.ir_version} → {ir}")
        out.ir_version = ir

    del graph.value_info[:]
    try:
        out = onnx.shape_inference.infer_shapes(out)
    except Exception as exc:  # shape inference is advisory: shapes are measured by running later
        notes.append(f"ONNX shape inference failed ({_first_line(exc)}); shapes come from running the model")
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        raise CanonicalizationError(
            f"the model is not valid after rewriting it to opset {default_opset(out)}: {_first_line(exc)}"
        ) from None
    return CanonicalModel(model=out, original_opset=opset, notes=tuple(notes), qoperator_rewritten=rewritten)


def _symbolic_negative_dims(graph: onnx.GraphProto) -> int:
    """Exporters (paddle2onnx) write a dynamic dimension as dim_value -1; make each such dim of
    the graph's inputs and outputs symbolic (``N`` on axis 0, ``dK`` on axis K)."""
    count = 0
    for vi in (*graph.input, *graph.output):
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.Clear()
                dim.dim_param = "N" if axis == 0 else f"d{axis}"
                count += 1
    return count


def _constants_to_initializers(graph: onnx.GraphProto) -> int:
    kept, moved = [], 0
    for node in graph.node:
        value = constant_node_array(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is None:
            kept.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        moved += 1
    if moved:
        replace_nodes(graph, kept)
    return moved


def _ranks(model: onnx.ModelProto, probe: RankProbe | None = None) -> dict[str, int]:
    """Tensor ranks from ONNX shape inference, and from ``probe`` (running the model) for typed
    tensors whose shape inference could not follow (e.g. a Reshape to a computed shape)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    ranks, unknown = {}, []
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
        elif vi.type.tensor_type.elem_type:
            unknown.append(vi.name)
    ranks.update({t.name: len(t.dims) for t in g.initializer})
    if unknown and probe is not None:
        ranks.update(probe(inferred, unknown))
    return ranks


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
