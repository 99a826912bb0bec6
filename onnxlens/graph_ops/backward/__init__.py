"""The backward compiler: ``append_vjp`` appends vector-Jacobian products to an ONNX graph,
built from standard ONNX ops by per-op rules (``rules/``) with optional overrides."""

from onnxlens.graph_ops.backward import rules as _rules  # noqa: F401  (registers the defaults)
from onnxlens.graph_ops.backward.compile import GradientModel, gradient_model, prepare_for_differentiation
from onnxlens.graph_ops.backward.overrides import RuleSet, by_node, by_op, by_tensor, first_layer
from onnxlens.graph_ops.backward.registry import VJP_RULES, RuleContext, vjp_rule
from onnxlens.graph_ops.backward.traversal import (
    VjpModel, append_vjp, backward_coverage, grad_name, seed_name, total_name,
)

__all__ = [
    "GradientModel", "backward_coverage", "gradient_model", "prepare_for_differentiation", "RuleContext", "RuleSet", "VJP_RULES", "VjpModel", "append_vjp", "by_node", "by_op", "by_tensor",
    "first_layer", "grad_name", "seed_name", "total_name", "vjp_rule",
]
