"""ONNX → ONNX transforms: load and validate, canonicalize, describe, expose inner tensors."""

from onnxlens.graph_ops.canonical import (
    MAX_SUPPORTED_OPSET,
    MIN_SUPPORTED_OPSET,
    CanonicalModel,
    canonicalize,
    default_opset,
    validate_model,
)
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.load import DEFAULT_MAX_MODEL_BYTES, LoadedModel, load_model
from onnxlens.graph_ops.model_spec import InputSpec, ModelSpec, OutputSpec, TensorSpec, detect_layout, model_spec
from onnxlens.graph_ops.opset_upgrade import CANONICAL_OPSET
from onnxlens.graph_ops.summary import GraphSummary, summarize_graph
from onnxlens.graph_ops.tensors import RESERVED_PREFIX

__all__ = [
    "CANONICAL_OPSET", "DEFAULT_MAX_MODEL_BYTES", "MAX_SUPPORTED_OPSET", "MIN_SUPPORTED_OPSET",
    "RESERVED_PREFIX", "CanonicalModel", "GraphSummary", "InputSpec", "LoadedModel", "ModelSpec",
    "OutputSpec", "TensorSpec", "canonicalize", "default_opset", "detect_layout", "expose",
    "load_model", "model_spec", "summarize_graph", "validate_model",
]
