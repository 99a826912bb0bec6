import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def run_cli(*args, env=None):
    """Run ``onnxlens`` in a subprocess, as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ONNXLENS_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "onnxlens.cli", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=300,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def save(tmp_path):
    """Write a ModelProto (or bytes) to tmp_path/name and return the path."""

    def _save(model, name="model.onnx"):
        path = tmp_path / name
        path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        return path

    return _save


@pytest.fixture(scope="session")
def shapes_int8(tmp_path_factory):
    """models/shapes_cnn.onnx quantized by ONNX Runtime (after its pre-processing), calibrated on
    16 test images: QDQ per-tensor, QDQ per-channel, and QOperator."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = tmp_path_factory.mktemp("int8")
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:16].astype(np.float32)

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([{"image": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.rows, None)

    quant_pre_process(str(MODELS / "shapes_cnn.onnx"), str(folder / "pre.onnx"))
    paths = {}
    for name, fmt, per_channel in (("qdq", QuantFormat.QDQ, False), ("qdq_per_channel", QuantFormat.QDQ, True),
                                   ("qoperator", QuantFormat.QOperator, False)):
        paths[name] = folder / f"{name}.onnx"
        quantize_static(str(folder / "pre.onnx"), str(paths[name]), Rows(), quant_format=fmt,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return paths
