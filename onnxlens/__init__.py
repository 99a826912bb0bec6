"""onnxlens: explain and audit image CNNs exported to ONNX, without the framework that trained them."""

import os

__version__ = "0.1.0"

# ONNX Runtime on Linux keeps a telemetry queue with a persistent device id under
# ~/.cache/Microsoft unless this is set before it initializes; a user's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from onnxlens.errors import OnnxLensError  # noqa: E402
from onnxlens.methods import Explainer, Explanation  # noqa: E402
from onnxlens.runtime.model_import import ImportedModel, import_model  # noqa: E402
from onnxlens.evaluation import evaluate  # noqa: E402

__all__ = ["Explainer", "Explanation", "ImportedModel", "OnnxLensError", "__version__", "evaluate", "import_model"]
