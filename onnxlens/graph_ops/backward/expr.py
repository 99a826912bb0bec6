"""Tensors of a backward graph written with Python operators, so a rule reads like its math:
``lambda ct, a, b: (ct * b, ct * a)``. An expression emits its nodes only when its name is
asked for, once, so the cotangent of an input that needs none is never built; numbers become
constants of the rule's float type (tinygrad's ``gradient.py`` writes its rules this way over
its own ops)."""

from __future__ import annotations

from collections.abc import Callable

from onnxlens.graph_ops.backward.emitter import Emitter


class Expr:
    """A lazily emitted tensor: a graph tensor's name, or the op that computes it."""

    def __init__(self, g: Emitter, name: str | None = None, build: Callable[[], str] | None = None):
        self._g, self._name, self._build = g, name, build

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self._build()
        return self._name

    def _operand(self, value) -> str:
        """An expression's or a tensor's name; a number as a constant."""
        if isinstance(value, Expr):
            return value.name
        return value if isinstance(value, str) else self._g.const(float(value))

    def apply(self, op_type: str, *others, **attrs) -> Expr:
        """The ONNX op ``op_type`` on this tensor and ``others`` (expressions, tensor names or
        numbers)."""
        g = self._g
        return Expr(g, build=lambda: g.op(op_type, self.name, *map(self._operand, others), **attrs))

    def _reversed(self, op_type: str, other) -> Expr:
        g = self._g
        return Expr(g, build=lambda: g.op(op_type, self._operand(other), self.name))

    def __add__(self, other) -> Expr:
        return self.apply("Add", other)

    def __radd__(self, other) -> Expr:
        return self._reversed("Add", other)

    def __sub__(self, other) -> Expr:
        return self.apply("Sub", other)

    def __rsub__(self, other) -> Expr:
        return self._reversed("Sub", other)

    def __mul__(self, other) -> Expr:
        return self.apply("Mul", other)

    def __rmul__(self, other) -> Expr:
        return self._reversed("Mul", other)

    def __truediv__(self, other) -> Expr:
        return self.apply("Div", other)

    def __rtruediv__(self, other) -> Expr:
        return self._reversed("Div", other)

    def __neg__(self) -> Expr:
        return self.apply("Neg")

    def where(self, if_true, if_false) -> Expr:
        """``if_true`` where this boolean tensor holds, else ``if_false``."""
        return self.apply("Where", if_true, if_false)

    def as_float(self) -> Expr:
        """A boolean tensor as 0/1 in the rule's float type."""
        return self.apply("Cast", to=self._g.float_type)
