"""Soft decision trees: the hand-derived gradient against finite differences, distillation of
the digits model (fidelity on held-out inputs), the filters, the command line."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.methods import MethodError
from onnxlens.methods.soft_tree import _objective, distill

DIGITS = np.load(MODELS / "samples" / "digits" / "test.npz")


@pytest.mark.parametrize("depth", [1, 3])
def test_gradient_matches_finite_differences(depth):
    rng = np.random.default_rng(depth)
    z, targets = rng.standard_normal((25, 6)), rng.dirichlet(np.ones(4), 25)
    inner, leaves = 2 ** depth - 1, 2 ** depth
    params = rng.standard_normal(inner * 7 + leaves * 4)
    _, grad = _objective(params, z, targets, depth, 4, 0.1, 1e-3)
    for _ in range(3):
        d, h = rng.standard_normal(params.size), 1e-6
        numeric = (_objective(params + h * d, z, targets, depth, 4, 0.1, 1e-3)[0]
                   - _objective(params - h * d, z, targets, depth, 4, 0.1, 1e-3)[0]) / (2 * h)
        assert numeric == pytest.approx(grad @ d, rel=1e-5, abs=1e-8)


def test_distilled_digits_tree():
    explainer = Explainer(MODELS / "digits_cnn.onnx", device="cpu")
    tree, report = distill(explainer.engine, DIGITS["x"], depth=5)
    assert report["heldout_inputs"] == 90 and report["fidelity_heldout"] >= 0.75 and report["fidelity_train"] >= 0.95
    proba = tree.predict_proba(DIGITS["x"][:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(axis=1), 1)
    assert tree.filters((1, 32, 32)).shape == (31, 1, 32, 32)
    with pytest.raises(MethodError, match="heldout"):
        distill(explainer.engine, DIGITS["x"], depth=2, heldout=1.5)


def test_cli(tmp_path, cli):
    np.save(tmp_path / "x.npy", DIGITS["x"][:120])
    result = cli("distill", MODELS / "digits_cnn.onnx", "--data", tmp_path / "x.npy", "--depth", 3,
                 "--out", tmp_path / "tree.npz", "--filters", tmp_path / "filters.png")
    assert result.returncode == 0, result.stderr
    assert "soft tree of depth 3 (8 leaves) on 90 inputs" in result.stdout
    with np.load(tmp_path / "tree.npz") as saved:
        assert saved["weights"].shape == (7, 1024) and json.loads(str(saved["report"]))["heldout_inputs"] == 30
    picture = np.asarray(Image.open(tmp_path / "filters.png"))
    assert picture.ndim == 3 and picture.std() > 10
