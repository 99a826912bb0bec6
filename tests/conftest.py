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
