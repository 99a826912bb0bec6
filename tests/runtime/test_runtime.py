"""Sessions: device choice, options, quiet CPU fallback, and the compiled-graph cache."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from builders import conv_classifier, f32
from conftest import ROOT
from onnxlens import errors
from onnxlens.runtime import CompiledGraphCache, SessionConfig, create_session, cuda_available, transform_key


def test_cpu_session_runs_and_reports_provider():
    session = create_session(conv_classifier(), SessionConfig(device="cpu", threads=1, optimization="basic"))
    assert session.provider == "CPUExecutionProvider" and session.device == "cpu"
    out = session.run({"x": f32(2, 3, 8, 8)})
    assert out["logits"].shape == (2, 4)


@pytest.mark.parametrize("serialized", [False, True], ids=["proto", "bytes"])
def test_cpu_sessions_skip_reuse_planning_and_large_graphs_skip_optimizers(monkeypatch, serialized):
    """Both cost super-linear time on deep graphs; a small graph keeps its optimization level."""
    import onnxruntime as ort

    from onnxlens.runtime import session as session_module

    model = conv_classifier()
    model = model.SerializeToString() if serialized else model
    small = create_session(model, SessionConfig(device="cpu"))._inner.get_session_options()
    assert not small.enable_mem_reuse
    assert small.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    monkeypatch.setattr(session_module, "LARGE_GRAPH_NODES", 2)
    large = create_session(model, SessionConfig(device="cpu"))
    options = large._inner.get_session_options()
    assert not options.enable_mem_reuse
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert large.run({"x": f32(1, 3, 8, 8)})["logits"].shape == (1, 4)


def test_auto_uses_cuda_only_when_a_session_starts_there():
    session = create_session(conv_classifier(), SessionConfig(device="auto"))
    assert session.device == ("cuda" if cuda_available() else "cpu")


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_cuda_request_without_gpu_is_a_clear_error():
    with pytest.raises(errors.DeviceUnavailableError, match="'cuda' requested but unavailable"):
        create_session(conv_classifier(), SessionConfig(device="cuda"))


def test_auto_on_cpu_machine_is_quiet():
    """onnxruntime-gpu without a GPU must not print loader errors or warnings."""
    code = ("from builders import conv_classifier; from onnxlens.runtime import create_session;"
            "import numpy as np; s = create_session(conv_classifier());"
            "s.run({'x': np.zeros((1, 3, 8, 8), np.float32)}); print(s.provider)")
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                            cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() in ("CPUExecutionProvider", "CUDAExecutionProvider")


@pytest.mark.parametrize("kwargs, phrase", [
    ({"device": "tpu"}, "device must be one of"),
    ({"optimization": "max"}, "optimization must be one of"),
    ({"threads": 0}, "threads must be at least 1"),
])
def test_bad_session_config(kwargs, phrase):
    with pytest.raises(errors.RuntimeFailure, match=phrase):
        SessionConfig(**kwargs)


def test_missing_input_and_bad_shape_are_clear():
    session = create_session(conv_classifier(), SessionConfig(device="cpu"))
    with pytest.raises(errors.InputShapeError, match="missing model input"):
        session.run({})
    with pytest.raises(errors.RuntimeFailure, match="failed to run"):
        session.run({"x": f32(1, 3, 8)})


def test_transform_key_is_order_independent():
    assert transform_key({"a": 1, "b": [1, 2]}) == transform_key({"b": [1, 2], "a": 1})
    assert transform_key({"a": 1}) != transform_key({"a": 2})


def test_cache_builds_each_key_once_and_evicts_lru():
    cache = CompiledGraphCache(max_entries=2)
    builds = []

    def build():
        builds.append(1)
        return conv_classifier()

    cpu = SessionConfig(device="cpu")
    first = cache.get("sha", {"t": "forward"}, build, cpu)
    assert cache.get("sha", {"t": "forward"}, build, cpu) is first
    cache.get("sha", {"t": "vjp"}, build, cpu)
    cache.get("other", {"t": "forward"}, build, cpu)
    assert len(cache) == 2 and cache.hits == 1 and cache.misses == 3
    cache.get("sha", {"t": "forward"}, build, cpu)  # evicted: built again
    assert len(builds) == 4


def test_cache_builds_once_under_concurrency():
    cache = CompiledGraphCache()
    builds = []

    def build():
        builds.append(1)
        return conv_classifier()

    threads = [threading.Thread(target=cache.get, args=("sha", {}, build, SessionConfig(device="cpu")))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and cache.hits == 5


def test_session_accepts_serialized_bytes():
    session = create_session(conv_classifier().SerializeToString(), SessionConfig(device="cpu"))
    assert np.isfinite(session.run({"x": f32(1, 3, 8, 8)})["logits"]).all()
