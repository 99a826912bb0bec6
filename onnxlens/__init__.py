"""onnxlens: explain and audit image CNNs exported to ONNX, without the framework that trained them.

The names below load on first use (PEP 562), so importing one layer (``onnxlens.report``, say)
does not load ONNX Runtime and every method and metric.
"""

import importlib
import os

__version__ = "0.1.0"

# ONNX Runtime on Linux keeps a telemetry queue with a persistent device id under
# ~/.cache/Microsoft unless this is set before it initializes; a user's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_EXPORTS = {
    "Explainer": "onnxlens.methods", "Explanation": "onnxlens.methods", "OnnxLensError": "onnxlens.errors",
    "ImportedModel": "onnxlens.runtime.model_import", "import_model": "onnxlens.runtime.model_import",
    "evaluate": "onnxlens.evaluation", "Target": "onnxlens.methods",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnxlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
