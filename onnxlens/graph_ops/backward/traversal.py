"""``append_vjp``: one traversal, knowing no op, that appends a backward subgraph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxlens.errors import InvalidModelError, UnsupportedOperatorError, quote
from onnxlens.graph_ops.backward.emitter import Emitter
from onnxlens.graph_ops.backward.overrides import RuleSet, SelectionContext, find_first_layer
from onnxlens.graph_ops.backward.registry import VJP_RULES, RuleContext
from onnxlens.graph_ops.index import graph_index
from onnxlens.graph_ops.tensors import RESERVED_PREFIX, NameAllocator, constant_arrays

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
#: Ops whose integer output (the first) still carries a cotangent (the straight-through estimator).
_STRAIGHT_THROUGH = {"QuantizeLinear", "DynamicQuantizeLinear"}


def seed_name(output: str) -> str:
    return f"{RESERVED_PREFIX}seed__{output}"


def grad_name(tensor: str) -> str:
    return f"{RESERVED_PREFIX}grad__{tensor}"


def total_name(tensor: str) -> str:
    return f"{RESERVED_PREFIX}total__{tensor}"


@dataclass(frozen=True)
class VjpModel:
    """A forward + backward model: feed the original inputs plus one seed per explained output;
    read the forward outputs plus one cotangent per ``wrt`` tensor and one per-row sum of the
    cotangent per ``totals`` tensor."""

    model: onnx.ModelProto
    seeds: dict[str, str]  #: explained output → seed input name
    grads: dict[str, str]  #: wrt tensor → cotangent output name
    totals: dict[str, str] = field(default_factory=dict)  #: totals tensor → output of its cotangent's row sums


def append_vjp(
    model: onnx.ModelProto,
    outputs: Sequence[str],
    wrt: Sequence[str],
    rules: RuleSet | None = None,
    totals: Sequence[str] = (),
) -> VjpModel:
    """Append the vector-Jacobian product of ``outputs`` w.r.t. ``wrt`` to a canonical model;
    for ``totals`` tensors only the sum of each row of the cotangent comes out (N values, not
    N tensors: what a conservation check needs).

    Only the path from ``wrt`` to ``outputs`` is differentiated; integer tensors (shapes,
    indices) are not. Every op on that path needs a rule (``rules`` first, then the default
    table), else one :class:`UnsupportedOperatorError` names every missing op and node.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    infos, elem_types = _tensor_facts(graph)
    constants = constant_arrays(graph)
    shapes = {name: _shape(vi) for name, vi in infos.items()}
    nodes, active = _differentiated(graph, outputs, [*wrt, *totals], elem_types, infos)
    rules = rules or RuleSet()
    chosen = _choose_rules(nodes, rules)
    nonnegative = nonnegative_tensors(graph, constants)
    wiring = graph_index(graph)
    producers, consumers = wiring.producers, wiring.consumers

    g = Emitter(NameAllocator(out))
    contributions: dict[str, list[str]] = {}
    seeds = {}
    for o in outputs:
        seeds[o] = seed_name(o)
        contributions.setdefault(o, []).append(seeds[o])
    for node in reversed(nodes):
        cts = [g.sum(contributions[o]) if contributions.get(o) else None for o in node.output]
        if not any(cts):
            continue
        for o, ct in zip(node.output, cts):
            if ct is not None:
                contributions[o] = [ct]
        needs = [bool(i) and i in active for i in node.input]
        g.float_dtype = _compute_dtype(node, elem_types)
        ctx = RuleContext(node, cts, needs, g, shapes, constants, elem_types, nonnegative, producers, consumers)
        results = list(chosen[id(node)](ctx))
        for i, (name, need) in enumerate(zip(node.input, needs)):
            ct = results[i] if i < len(results) else None
            if need and ct is None:
                raise UnsupportedOperatorError(
                    f"the backward rule of {node.op_type} node {quote(node.name)} gives no cotangent for input {i}",
                    missing=(node.op_type,),
                )
            if need:
                contributions.setdefault(name, []).append(ct)

    grads, row_sums = {}, {}
    for t in dict.fromkeys([*wrt, *totals]):
        if not contributions.get(t):
            raise InvalidModelError(f"no output depends on tensor {quote(t)}")
        ct = g.sum(contributions[t])
        if t in wrt:
            grads[t] = grad_name(t)
            g.nodes.append(helper.make_node("Identity", [ct], [grads[t]], name=g.names("grad")))
            graph.output.append(_value_info(grads[t], infos.get(t), constants.get(t)))
        if t in totals:
            row_sums[t] = total_name(t)
            rank = len(infos[t].type.tensor_type.shape.dim) if t in infos else 0
            if rank < 2:  # rank unknown (0) or 1: flattened to one row per leading index first
                ct, rank = g.op("Reshape", ct, g.ints([0, -1], "rows")), 2
            g.nodes.append(helper.make_node("ReduceSum", [ct, g.ints(range(1, rank), "axes")], [row_sums[t]],
                                            keepdims=0, name=g.names("total")))
            graph.output.append(helper.make_tensor_value_info(row_sums[t], elem_types.get(t, onnx.TensorProto.FLOAT),
                                                              [None]))
    for o in outputs:
        graph.input.append(_value_info(seeds[o], infos.get(o), constants.get(o)))
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    return VjpModel(out, seeds, grads, row_sums)


def backward_coverage(model: onnx.ModelProto, outputs: Sequence[str], wrt: Sequence[str],
                      rules: RuleSet | None = None) -> dict[str, list[str]]:
    """Op type → node names on the differentiated path that have no backward rule."""
    infos, elem_types = _tensor_facts(model.graph)
    nodes, _ = _differentiated(model.graph, outputs, wrt, elem_types, infos)
    return _missing(nodes, rules or RuleSet())


#: Ops whose output is never negative.
_NONNEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid"}
#: Ops whose output is non-negative when their data input(s) are.
_SIGN_PRESERVING_OPS = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Transpose", "Concat", "Identity", "Dropout", "ReduceMean", "ReduceMax", "ReduceSum", "Split", "Slice", "Gather",
    "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Max", "Min",
}


def nonnegative_tensors(graph: onnx.GraphProto, constants: dict) -> frozenset:
    """Tensors that hold no negative value whatever the input: outputs of ReLU-like ops and of
    pools, reshapes and concatenations of such tensors (rules can skip negative parts)."""
    known: set[str] = {name for name, value in constants.items() if value.size and value.min() >= 0}
    for node in graph.node:
        data = [i for i in node.input[:1] if i] if node.op_type not in ("Concat", "Max", "Min") else list(node.input)
        clip_floor = constants.get(node.input[1]) if node.op_type == "Clip" and len(node.input) > 1 and node.input[1] else None
        if (node.op_type in _NONNEGATIVE_OPS or (clip_floor is not None and clip_floor.min() >= 0)
                or (node.op_type in _SIGN_PRESERVING_OPS and data and all(i in known for i in data))
                or (node.op_type == "Resize" and node.input[0] in known and node.attribute and
                    all(a.s != b"cubic" for a in node.attribute if a.name == "mode"))):
            known.update(o for o in node.output if o)
    return frozenset(known)


def _compute_dtype(node, elem_types) -> np.dtype:
    """The float type a node computes in (its first float output's, else its first float
    input's): the type of the constants and masks its rule emits."""
    for name in (*node.output, *node.input):
        if elem_types.get(name) in _FLOAT:
            return np.dtype(helper.tensor_dtype_to_np_dtype(elem_types[name]))
    return np.dtype(np.float32)


def _tensor_facts(graph):
    """(name → value info, name → element type) for every typed tensor and initializer."""
    infos = {vi.name: vi for vi in (*graph.input, *graph.value_info, *graph.output)}
    elem_types = {name: vi.type.tensor_type.elem_type for name, vi in infos.items()}
    elem_types.update({t.name: t.data_type for t in graph.initializer})
    return infos, elem_types


def _differentiated(graph, outputs, wrt, elem_types, infos):
    """The nodes on a path from ``wrt`` to ``outputs`` through float tensors (in graph order),
    and the set of tensors on such paths."""
    producers = graph_index(graph).producers
    for name in (*outputs, *wrt):
        if name not in infos and name not in producers:
            raise InvalidModelError(f"tensor {quote(name)} is not in the graph")
    depends = set(wrt)
    for node in graph.node:  # topological order
        if any(i in depends for i in node.input):
            if node.op_type in _STRAIGHT_THROUGH:  # the quantized value; a dynamic scale is a statistic
                depends.add(node.output[0])
            else:
                depends.update(o for o in node.output if elem_types.get(o) in _FLOAT)
    needed, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        if t in producers:
            stack.extend(i for i in producers[t].input if i)
    active = depends & needed
    for o in outputs:
        if o not in active:
            cuts = [n for n in graph.node if n.op_type not in ("Shape", "Size") and any(i in depends for i in n.input)
                    and any(out in needed and out not in depends for out in n.output)]
            if cuts:  # the path exists, through integer tensors (dynamic quantization, indices)
                names = ", ".join(f"{n.op_type} node {quote(n.name)}" for n in cuts[:3])
                raise UnsupportedOperatorError(
                    f"output {quote(o)} depends on {', '.join(map(quote, wrt))} only through integer tensors "
                    f"({names}); forward-only methods (occlusion, RISE, LIME) still apply",
                    missing=tuple(sorted({n.op_type for n in cuts})))
            raise InvalidModelError(f"output {quote(o)} does not depend on {', '.join(map(quote, wrt))}")
    nodes = [n for n in graph.node if any(o in active for o in n.output) and any(i in active for i in n.input)]
    return nodes, active


def _rule_for(node, rules: RuleSet, selection: SelectionContext):
    if node.domain not in ("", "ai.onnx"):
        return None
    return rules.resolve(node, selection) or VJP_RULES.get(node.op_type)


def _missing(nodes, rules: RuleSet) -> dict[str, list[str]]:
    selection = SelectionContext(first_layer=find_first_layer(nodes))
    missing: dict[str, list[str]] = {}
    for node in nodes:
        if _rule_for(node, rules, selection) is None:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            missing.setdefault(key, []).append(node.name)
    return missing


def _choose_rules(nodes, rules: RuleSet) -> dict:
    missing = _missing(nodes, rules)
    if missing:
        parts = [f"{quote(op)} (node {', '.join(map(quote, names[:3]))}{', …' if len(names) > 3 else ''})"
                 for op, names in sorted(missing.items())]
        raise UnsupportedOperatorError(
            f"no backward rule for {', '.join(parts)}; forward-only methods (occlusion, RISE, LIME) still apply",
            missing=tuple(sorted(missing)),
        )
    selection = SelectionContext(first_layer=find_first_layer(nodes))
    return {id(node): _rule_for(node, rules, selection) for node in nodes}


def _shape(vi: onnx.ValueInfoProto):
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)


def _value_info(name, like: onnx.ValueInfoProto | None, const) -> onnx.ValueInfoProto:
    if like is not None:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(like)
        vi.name = name
        return vi
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(const.shape) if const is not None else None)
