"""Rule overrides: a rule set replaces the default VJP rule on chosen nodes.

Selection is by op type, by node name, by the name of a tensor the node produces, or by
position (the first layer: the first Conv/Gemm/MatMul reached from the input in data-flow
order). Guided Backprop, DeconvNet, LRP and DeepLIFT are rule sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx

from onnxlens.graph_ops.backward.registry import Rule

#: Ops that count as a "layer" for position-based selection.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

Selector = Callable[[onnx.NodeProto, "SelectionContext"], bool]


@dataclass(frozen=True)
class SelectionContext:
    #: the output of the first layer node on the differentiated path (node names may be empty
    #: or repeated; output names are unique)
    first_layer: str | None


def by_op(*op_types: str) -> Selector:
    return lambda node, _ctx: node.op_type in op_types


def by_node(*names: str) -> Selector:
    return lambda node, _ctx: node.name in names


def by_tensor(*names: str) -> Selector:
    return lambda node, _ctx: any(o in names for o in node.output)


def first_layer() -> Selector:
    return lambda node, ctx: ctx.first_layer is not None and node.output[0] == ctx.first_layer


@dataclass(frozen=True)
class RuleSet:
    """An ordered list of (selector, rule); the first matching entry wins over the default."""

    entries: tuple[tuple[Selector, Rule], ...] = field(default=())
    name: str = "custom"

    def with_rule(self, selector: Selector, rule: Rule) -> RuleSet:
        return RuleSet(self.entries + ((selector, rule),), self.name)

    @property
    def key(self) -> str:
        """A digest of what the rule set computes — each selector's and rule's code and the
        values they close over — so two rule sets with one name never share a compiled graph,
        and one built twice from the same parameters does."""
        text = repr([(_fingerprint(selector), _fingerprint(rule)) for selector, rule in self.entries])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolve(self, node: onnx.NodeProto, ctx: SelectionContext) -> Rule | None:
        for selector, rule in self.entries:
            if selector(node, ctx):
                return rule
        return None


def _fingerprint(fn, seen: frozenset = frozenset()) -> object:
    """A function's module, name, code and the values it closes over or defaults to (functions
    among them by their own fingerprint); a callable object by its repr."""
    code = getattr(fn, "__code__", None)
    if code is None or id(fn) in seen:
        return repr(fn) if code is None else fn.__qualname__
    seen = seen | {id(fn)}
    captured = tuple(_fingerprint(c.cell_contents, seen) if callable(c.cell_contents) else repr(c.cell_contents)
                     for c in fn.__closure__ or ())
    return (fn.__module__, fn.__qualname__, code.co_code, repr(code.co_consts), captured,
            repr(fn.__defaults__), repr(fn.__kwdefaults__))


def find_first_layer(nodes: Sequence[onnx.NodeProto]) -> str | None:
    """The output of the first layer node among ``nodes`` (given in topological order)."""
    return next((n.output[0] for n in nodes if n.op_type in LAYER_OPS), None)
