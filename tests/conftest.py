import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
# every test imports its models anew (tests of the disk cache turn it on for themselves)
os.environ.setdefault("ONNXLENS_CACHE_DIR", "off")


def run_cli(*args, env=None):
    """Run ``onnxlens`` in a subprocess, as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ONNXLENS_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "onnxlens.cli", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=300,
    )


@pytest.fixture(scope="module")
def digits():
    """The shipped digits CNN (1×32×32) as an Explainer on the CPU, one per test module."""
    from onnxlens import Explainer

    return Explainer(MODELS / "digits_cnn.onnx", device="cpu")


@pytest.fixture(scope="module")
def shapes():
    """The shipped shapes CNN (3×64×64, the watermark model) as an Explainer on the CPU."""
    from onnxlens import Explainer

    return Explainer(MODELS / "shapes_cnn.onnx", device="cpu")


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


def quantize_with_ort(source, rows, folder, formats=(("qdq", "QDQ", False),)):
    """``source`` quantized by ONNX Runtime as deployers do (quant_pre_process where it copes,
    then quantize_static calibrated on ``rows``, uint8 activations, int8 weights), once per
    (name, format, per_channel) of ``formats``; returns name → path. Weights take 7 bits
    (``reduce_range``, ORT's advice for x86 CPUs without VNNI): ORT's u8s8 kernels saturate
    on AVX2 otherwise, and the deployed model's classes would depend on the test machine."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(source, load_external_data=False).graph.input[0].name

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([{name: rows[i:i + 1]} for i in range(len(rows))])

        def get_next(self):
            return next(self.rows, None)

    try:
        quant_pre_process(str(source), str(folder / "pre.onnx"))
        prepared = folder / "pre.onnx"
    except Exception:  # its symbolic shape inference fails on some exports (paddle2onnx): optional
        prepared = source
    paths = {}
    for label, fmt, per_channel in formats:
        paths[label] = folder / f"{label}.onnx"
        quantize_static(str(prepared), str(paths[label]), Rows(), quant_format=QuantFormat[fmt],
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=True)
    return paths


@pytest.fixture(scope="session")
def shapes_int8(tmp_path_factory):
    """models/shapes_cnn.onnx quantized by ONNX Runtime, calibrated on 16 test images: QDQ
    per-tensor, QDQ per-channel, and QOperator."""
    import numpy as np

    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:16].astype(np.float32)
    return quantize_with_ort(MODELS / "shapes_cnn.onnx", x, tmp_path_factory.mktemp("int8"),
                             (("qdq", "QDQ", False), ("qdq_per_channel", "QDQ", True),
                              ("qoperator", "QOperator", False)))
