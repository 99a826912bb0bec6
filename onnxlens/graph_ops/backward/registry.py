"""The table of VJP rules: op type → a small pure function of (node, output cotangents).

A rule receives a :class:`RuleContext` and returns one cotangent name (or None) per node
input, trailing Nones left out. It may only emit nodes through ``ctx.g`` and read facts through
the context; it knows nothing of the traversal. Elementwise rules are written over expressions
(:func:`elementwise_rule`), so they read like their math.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxlens.errors import InvalidModelError, UnsupportedOperatorError, quote
from onnxlens.graph_ops.backward.emitter import Emitter, Shape
from onnxlens.graph_ops.backward.expr import Expr
from onnxlens.graph_ops.tensors import node_attr


@dataclass
class RuleContext:
    node: onnx.NodeProto
    cts: list[str | None]  #: cotangent of each node output (None: nothing flows back)
    needs: list[bool]  #: whether each node input needs a cotangent
    g: Emitter
    shapes: dict[str, Shape]
    constants: dict[str, np.ndarray]
    elem_types: dict[str, int]  #: tensor → ONNX element type
    nonnegative: frozenset = frozenset()  #: tensors known to hold no negative value (ReLU outputs, …)
    producers: Mapping[str, onnx.NodeProto] = field(default_factory=dict)  #: tensor → the node computing it
    consumers: Mapping[str, Sequence[onnx.NodeProto]] = field(default_factory=dict)  #: tensor → nodes reading it

    @property
    def inputs(self) -> Sequence[str]:
        return self.node.input

    @property
    def outputs(self) -> Sequence[str]:
        return self.node.output

    @property
    def ct(self) -> str | None:
        """Cotangent of the first output."""
        return self.cts[0]

    def attr(self, name: str, default=None):
        value = node_attr(self.node, name, default)
        return value.decode() if isinstance(value, bytes) else value

    def attrs(self, *exclude: str) -> dict:
        """The node's attributes as keyword arguments for ``g.op`` (to re-emit the op)."""
        return {a.name: self.attr(a.name) for a in self.node.attribute if a.name not in exclude}

    def shape(self, tensor: str) -> Shape:
        """Static shape of a tensor (the batch may be symbolic); an error if unknown."""
        if tensor in self.constants:
            return tuple(self.constants[tensor].shape)
        shape = self.shapes.get(tensor)
        if shape is None or any(d is None for d in shape):
            raise InvalidModelError(
                f"{self.node.op_type} node {quote(self.node.name)}: the shape of {quote(tensor)} is unknown; "
                "import the model with onnxlens.import_model so shapes are measured"
            )
        return shape

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a constant input, or None when it is computed at run time."""
        return self.constants.get(tensor)

    def elem_type(self, tensor: str) -> int:
        return self.elem_types.get(tensor, onnx.TensorProto.FLOAT)

    def unsupported(self, why: str):
        raise UnsupportedOperatorError(
            f"{self.node.op_type} node {quote(self.node.name)} cannot be differentiated: {why}",
            missing=(self.node.op_type,),
        )

    def forward_output(self, index: int, hint: str) -> str:
        """Name of the forward node's output ``index``, asking the node for it if unused
        (e.g. MaxPool's Indices)."""
        while len(self.node.output) <= index:
            self.node.output.append("")
        if not self.node.output[index]:
            self.node.output[index] = self.g.names(hint)
        return self.node.output[index]

    def require_const(self, index: int, what: str) -> np.ndarray:
        value = self.const(self.inputs[index]) if index < len(self.inputs) and self.inputs[index] else None
        if value is None:
            raise InvalidModelError(
                f"{self.node.op_type} node {quote(self.node.name)}: {what} must be a constant to differentiate"
            )
        return value


Rule = Callable[[RuleContext], Sequence[str | None]]
VJP_RULES: dict[str, Rule] = {}


def vjp_rule(*op_types: str):
    """Register a function as the default VJP rule of ``op_types``."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            VJP_RULES[op] = fn
        return fn

    return register


def elementwise_rule(*op_types: str, broadcasting: bool = False):
    """Register ``fn(ct, *inputs) -> cotangents`` as the VJP rule of the elementwise
    ``op_types``, written over :class:`~onnxlens.graph_ops.backward.expr.Expr` (the cotangent
    and the inputs; ``y=`` the output and ``ctx=`` the rule context when ``fn`` takes them).
    It returns one cotangent expression (or None) per input, trailing ones left out at will;
    only those of inputs that need one are emitted, and with ``broadcasting`` each is summed
    back to its input's shape (numpy broadcasting undone)."""

    def register(fn):
        wants = inspect.signature(fn).parameters

        def rule(ctx: RuleContext) -> list[str | None]:
            g = ctx.g
            extra = {"y": Expr(g, ctx.outputs[0]), "ctx": ctx}
            cts = fn(Expr(g, ctx.ct), *(Expr(g, i) for i in ctx.inputs), **{k: v for k, v in extra.items() if k in wants})
            out = []
            for i, (ct, need) in enumerate(zip(cts, ctx.needs)):
                if not need or ct is None:
                    out.append(None)
                elif broadcasting:
                    out.append(g.reduce_to_shape(ct.name, ctx.shape(ctx.outputs[0]), ctx.shape(ctx.inputs[i])))
                else:
                    out.append(ct.name)
            return out

        for op in op_types:
            VJP_RULES[op] = rule
        return fn

    return register
