"""Rewrites of the ops whose signature changed between opset 11 and the canonical opset.

onnx's version_converter crashes on some real exports, so the handful of ops that matter for
CNNs are rewritten here, one small rule per op. Pad, Clip and Slice already take their
parameters as inputs from opset 11 on and need no rule; anything else that is invalid at the
canonical opset is caught by the checker afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlens.errors import CanonicalizationError, quote
from onnxlens.graph_ops.index import replace_nodes
from onnxlens.graph_ops.tensors import NameAllocator, node_attr

#: Every model is brought to at least this default-domain opset: the one where every op
#: listed here takes its parameters as inputs, and ScatterElements/ScatterND have reduction='add'.
CANONICAL_OPSET = 18

_REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare",
)


class UpgradeContext:
    """What a rule may use: the source opset, known tensor ranks, and a way to add constants."""

    def __init__(self, model: onnx.ModelProto, from_opset: int, ranks: dict[str, int]):
        self.from_opset = from_opset
        self.ranks = ranks
        self.names = NameAllocator(model)
        self.new_initializers: list[onnx.TensorProto] = []

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.names(hint)
        self.new_initializers.append(numpy_helper.from_array(value, name))
        return name

    def rank(self, tensor: str, node: onnx.NodeProto) -> int:
        if tensor not in self.ranks:
            raise CanonicalizationError(
                f"cannot upgrade {node.op_type} node {quote(node.name)}: the rank of its input is unknown"
            )
        return self.ranks[tensor]


Rule = Callable[[onnx.NodeProto, UpgradeContext], list[onnx.NodeProto]]
#: op type → (rule, the first opset where the op already has the canonical signature)
UPGRADE_RULES: dict[str, tuple[Rule, int]] = {}


def upgrade_rule(*op_types: str, canonical_since: int):
    def register(fn: Rule) -> Rule:
        for op in op_types:
            UPGRADE_RULES[op] = (fn, canonical_since)
        return fn

    return register


def _pop_attr(node: onnx.NodeProto, name: str):
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            del node.attribute[i]
            return value
    return None


def _set_input(node: onnx.NodeProto, index: int, name: str) -> None:
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = name


@upgrade_rule("Squeeze", "Unsqueeze", "ReduceSum", canonical_since=13)
@upgrade_rule(*_REDUCE_OPS, canonical_since=18)
def axes_attribute_to_input(node, ctx):
    """``axes`` moved from an attribute to the second input (opset 13; opset 18 for Reduce*)."""
    axes = _pop_attr(node, "axes")
    if axes is not None:
        _set_input(node, 1, ctx.constant(f"{node.op_type}_axes", np.asarray(axes, dtype=np.int64)))
    return [node]


@upgrade_rule("Split", canonical_since=18)
def split_sizes_to_input(node, ctx):
    """``split`` became an input at 13; at 18 equal splits must state ``num_outputs``."""
    split = _pop_attr(node, "split")
    if split is not None:
        _set_input(node, 1, ctx.constant("Split_sizes", np.asarray(split, dtype=np.int64)))
    if len(node.input) < 2 or not node.input[1]:
        node.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
    return [node]


@upgrade_rule("Dropout", canonical_since=12)
def dropout_ratio_to_input(node, ctx):
    """``ratio`` became an input at opset 12 (a no-op at inference either way)."""
    ratio = _pop_attr(node, "ratio")
    _pop_attr(node, "is_test")
    if ratio is not None:
        _set_input(node, 1, ctx.constant("Dropout_ratio", np.asarray(ratio, dtype=np.float32)))
    return [node]


@upgrade_rule("Softmax", "LogSoftmax", "Hardmax", canonical_since=13)
def softmax_single_axis(node, ctx):
    """Before opset 13 these flattened every axis from ``axis`` (default 1) on; now one axis."""
    axis = _pop_attr(node, "axis")
    axis = 1 if axis is None else axis
    rank = ctx.rank(node.input[0], node)
    axis = axis % rank
    node.attribute.append(helper.make_attribute("axis", -1))
    if axis == rank - 1:
        return [node]
    x, y = node.input[0], node.output[0]
    shape = ctx.names(f"{node.op_type}_shape")
    flat = ctx.names(f"{node.op_type}_flat")
    flat_out = ctx.names(f"{node.op_type}_flat_out")
    node.input[0], node.output[0] = flat, flat_out
    return [
        helper.make_node("Shape", [x], [shape], name=ctx.names("Shape")),
        helper.make_node("Flatten", [x], [flat], name=ctx.names("Flatten"), axis=axis),
        node,
        helper.make_node("Reshape", [flat_out, shape], [y], name=ctx.names("Reshape")),
    ]


@upgrade_rule("Resize", canonical_since=13)
def resize_modes(node, ctx):
    """Resize-11's ``tf_half_pixel_for_nn`` has no equivalent from opset 13 on."""
    if node_attr(node, "coordinate_transformation_mode") == b"tf_half_pixel_for_nn":
        raise CanonicalizationError(
            f"Resize node {quote(node.name)} uses coordinate mode 'tf_half_pixel_for_nn', "
            "removed in opset 13 and not supported"
        )
    return [node]


@upgrade_rule("BatchNormalization", canonical_since=14)
def batchnorm_inference_outputs(node, ctx):
    """Opset 14 dropped the training outputs; an inference graph uses only ``Y``."""
    if any(node.output[1:]):
        raise CanonicalizationError(
            f"BatchNormalization node {quote(node.name)} uses training-mode outputs; export the model in eval mode"
        )
    _pop_attr(node, "spatial")
    del node.output[1:]
    return [node]


def upgrade_graph(graph: onnx.GraphProto, ctx: UpgradeContext, counts: dict[str, int]) -> None:
    """Rewrite every node (subgraphs included) that needs a rule, in place."""
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                upgrade_graph(attr.g, ctx, counts)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    upgrade_graph(sub, ctx, counts)
        entry = UPGRADE_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if entry is None or ctx.from_opset >= entry[1]:
            new_nodes.append(node)
            continue
        replacement = entry[0](_copy(node), ctx)
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        new_nodes.extend(replacement)
    replace_nodes(graph, new_nodes)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out
