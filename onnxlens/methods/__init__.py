"""Explanation methods over an engine (forward, vjp), one module per family, registered by name."""

from onnxlens.methods import attention, cam, gradients, meaningful, perturbation, relevance, uncertainty  # noqa: F401  (registers the method families)
from onnxlens.methods.explainer import Explainer
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import METHODS, MethodError, run_method
from onnxlens.methods.targets import Target

__all__ = ["METHODS", "Explainer", "Explanation", "MethodError", "Target", "run_method"]
