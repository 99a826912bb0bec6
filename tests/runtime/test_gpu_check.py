"""benchmarks/gpu_check.py runs without a GPU: it says so in one line, skips the CUDA parts and
still runs its throughput part on the CPU; its pieces are checked device against device."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from onnxlens.runtime import cuda_available

BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
gpu_check = pytest.importorskip("gpu_check")


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: the script measures it instead")
def test_runs_on_cpu_and_says_cuda_is_skipped():
    pytest.importorskip("torchvision")
    run = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--repeats", "1", "--size", "32"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "CUDA: not available" in out and "agreement skipped" in out
    assert "CUDA vs CPU" not in out
    for row in ("ORT forward", "gradient", "integrated_gradients (4 steps)", "lrp (epsilon_plus_flat)"):
        assert row in out
    assert "images/s" in out


def test_agreement_of_a_device_with_itself_is_exact():
    name, path, x = gpu_check.shipped_models()[1]
    found = gpu_check.agreement(path, x[:3], devices=("cpu", "cpu"))
    assert set(found) == set(gpu_check.METHODS)
    assert all(v == 0.0 for v in found.values()), found


def test_first_divergence_finds_none_on_one_device(capsys):
    name, path, x = gpu_check.shipped_models()[0]
    assert gpu_check.first_divergence(path, x[:2], device="cpu") == "no tensor differs beyond the tolerance"
    assert "cpu run against itself: largest relative difference 0.0e+00" in capsys.readouterr().out


def test_relative_difference():
    a = np.array([3.0, 4.0])
    assert gpu_check.relative(a, a) == 0.0
    assert gpu_check.relative(a + np.array([0.3, 0.4]), a) == pytest.approx(0.1)
