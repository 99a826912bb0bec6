"""ONNX Runtime sessions: provider choice and fallback, threads, a cache of compiled graphs,
and model import checked by running."""

from onnxlens.runtime.cache import CompiledGraphCache, transform_key
from onnxlens.runtime.model_import import ImportedModel, import_model, probe_feeds
from onnxlens.runtime.session import Session, SessionConfig, create_session, cuda_available

__all__ = [
    "CompiledGraphCache", "ImportedModel", "Session", "SessionConfig", "create_session",
    "cuda_available", "import_model", "probe_feeds", "transform_key",
]
