"""A memory budget sizes every session run: rows per run follow what the budget holds at the
model's measured bytes per row (a requested batch never exceeds it), methods that expand the
batch (Integrated Gradients' steps) keep to those runs, and a bad size is one line."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.errors import OnnxLensError
from onnxlens.runtime import memory
from onnxlens.runtime.session import Session

X = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:3]


def _per_row(explainer):
    engine = explainer.engine
    return memory.row_bytes(engine.model.measured_shapes) + 4 * int(np.prod(engine.probe_row_shape))


@pytest.mark.parametrize("size, want", [("512M", 512 << 20), ("2G", 2 << 30), ("1.5k", 1536), (4096, 4096),
                                        ("3 MiB", 3 << 20)])
def test_sizes(size, want):
    assert memory.parse_size(size) == want


@pytest.mark.parametrize("size", ["lots", "0", "-1G", 0])
def test_a_bad_size_is_named(size):
    with pytest.raises(OnnxLensError, match="a memory budget is a positive size"):
        memory.parse_size(size)


def test_rows_per_run_follow_the_budget():
    explainer = Explainer(MODELS / "shapes_cnn.onnx", device="cpu")
    per_row = _per_row(explainer)
    assert per_row > 4 * 3 * 64 * 64  # more than the input: every tensor of the graph
    for rows in (1, 3, 10):
        assert Explainer(MODELS / "shapes_cnn.onnx", device="cpu", memory_budget=rows * per_row).engine.batch_size == rows
    capped = Explainer(MODELS / "shapes_cnn.onnx", device="cpu", batch_size=32, memory_budget=2 * per_row)
    assert capped.engine.batch_size == 2  # a requested batch stays within the budget
    assert Explainer(MODELS / "shapes_cnn.onnx", device="cpu", memory_budget=1).engine.batch_size == 1
    assert Explainer(MODELS / "shapes_cnn.onnx", device="cpu", memory_budget="1T").engine.batch_size == memory.MAX_ROWS


def test_integrated_gradients_runs_keep_to_the_budget(monkeypatch):
    explainer = Explainer(MODELS / "shapes_cnn.onnx", device="cpu")
    small = Explainer(MODELS / "shapes_cnn.onnx", device="cpu", memory_budget=4 * _per_row(explainer))
    rows = []
    run = Session.run

    def counted(self, feeds, outputs=None):
        rows.append(max(len(v) for v in feeds.values()))
        return run(self, feeds, outputs)

    monkeypatch.setattr(Session, "run", counted)
    got = small.explain(X, "integrated_gradients", steps=32)
    assert max(rows) <= 4 and len(rows) >= 3 * 32 // 4
    want = explainer.explain(X, "integrated_gradients", steps=32)
    np.testing.assert_allclose(got.attribution, want.attribution, rtol=1e-5, atol=1e-7)


def test_the_command_line_and_the_audit_take_a_budget(tmp_path, cli):
    from onnxlens.pipelines.config import ConfigError, load_config

    np.save(tmp_path / "x.npy", X[:1])
    run = cli("explain", MODELS / "shapes_cnn.onnx", "--input", tmp_path / "x.npy", "--memory-budget", "64M",
              "--out", tmp_path / "e.npz")
    assert run.returncode == 0, run.stderr
    bad = cli("explain", MODELS / "shapes_cnn.onnx", "--input", tmp_path / "x.npy", "--memory-budget", "lots")
    assert bad.returncode == 1 and "a memory budget is a positive size" in bad.stderr
    base = {"model": str(MODELS / "shapes_cnn.onnx"), "dataset": {"path": str(tmp_path / "x.npy")},
            "methods": ["gradient"]}
    assert load_config({**base, "memory_budget": "1G"}).memory_budget == "1G"
    with pytest.raises(ConfigError, match="memory_budget"):
        load_config({**base, "memory_budget": "lots"})
