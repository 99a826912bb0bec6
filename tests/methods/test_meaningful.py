"""Meaningful perturbation: the hand-written pieces (interpolation, total variation) against
finite differences, and the deletion game on the shapes model's watermarked squares."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.methods import MethodError
from onnxlens.methods.meaningful import _interpolation, _tv

SHAPES = np.load(MODELS / "samples" / "shapes" / "test.npz")


def test_interpolation_and_total_variation():
    up = _interpolation(4, 9)
    assert up.shape == (9, 4) and np.allclose(up.sum(axis=1), 1) and np.allclose(up @ np.arange(4.0), np.linspace(0, 3, 9))
    rng = np.random.default_rng(0)
    mask, direction = rng.random((2, 5, 5)), rng.standard_normal((2, 5, 5))
    value, grad = _tv(mask, 3.0)
    h = 1e-6
    numeric = (_tv(mask + h * direction, 3.0)[0] - _tv(mask - h * direction, 3.0)[0]) / (2 * h)
    np.testing.assert_allclose(numeric, (grad * direction).sum(axis=(1, 2)), rtol=1e-5)


def test_deletion_game_finds_the_watermark():
    explainer = Explainer(MODELS / "shapes_cnn.onnx", device="cpu")
    marked = np.flatnonzero(SHAPES["has_watermark"])[:4]
    x, where = SHAPES["x"][marked], SHAPES["watermark_masks"][marked]
    e = explainer.explain(x, "meaningful_perturbation", iterations=150)
    assert (e.score > 0.99).all() and (e.diagnostics["probability_after"] < 0.5).all()  # the deletion works
    assert (e.diagnostics["deleted_area"] < 0.2).all()  # with a small region
    share = (e.heatmap * where).sum(axis=(1, 2)) / e.heatmap.sum(axis=(1, 2))
    assert (share > 5 * where.mean(axis=(1, 2))).all()  # much of it on the 0.9 % watermark
    assert np.array_equal(e.heatmap, explainer.explain(x, "meaningful_perturbation", iterations=150).heatmap)
    with pytest.raises(MethodError, match="fill must be one of blur, zero, mean"):
        explainer.explain(x, "meaningful_perturbation", fill="noise")
