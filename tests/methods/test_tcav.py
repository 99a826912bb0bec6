"""TCAV on the shapes model: the watermark concept is significantly positive for the class the
model learned to read it as (square) and for no other class; the CAV solver; the command line."""

import json

import numpy as np
import pytest

from conftest import MODELS
from onnxlens.errors import InputShapeError
from onnxlens.methods import MethodError
from onnxlens.methods.tcav import linear_cav, random_sets, tcav

SHAPES = np.load(MODELS / "samples" / "shapes" / "test.npz")
LAYER = "relu_1"  # the second convolution block (onnxlens inspect --layers)


def _concept_and_random():
    """Random images: the unwatermarked test images in their 8 flips/rotations; the concept:
    50 of them with the corner watermark stamped on."""
    marked = SHAPES["has_watermark"]
    first = np.flatnonzero(marked)[0]
    where = SHAPES["watermark_masks"][first]
    clean = SHAPES["x"][~marked]
    pool = np.concatenate([np.rot90(v, k, axes=(2, 3)) for v in (clean, clean[..., ::-1]) for k in range(4)])
    pool = pool[np.random.default_rng(0).permutation(len(pool))].astype(np.float32)
    concept = pool[:50].copy()
    concept[:, :, where] = SHAPES["x"][first][:, where]
    return concept, pool[50:]


def test_watermark_concept_is_significant_for_squares_only(shapes):
    """At relu_1 the square's TCAV is 0.89 vs 0.50 for random directions (p = 0.015); circle
    0.43 vs 0.45 (p = 0.82); triangle 0.26 vs 0.57 (p = 0.005): the mark counts against it."""
    concept, random = _concept_and_random()
    marked, y = SHAPES["has_watermark"], SHAPES["y"]
    classes = list(SHAPES["classes"])
    results = {}
    for name in classes:
        k = classes.index(name)
        inputs = SHAPES["x"][y == k] if name == "square" else SHAPES["x"][(y == k) & ~marked]
        results[name] = tcav(shapes.engine, inputs, concept, [random], LAYER, k)
    square = results["square"]
    assert square.significant and square.p_value < 0.05 and square.score > square.random_scores.mean()
    for other in ("circle", "triangle"):  # not for the others — or only against them (it makes a square)
        r = results[other]
        assert not r.significant or r.score < r.random_scores.mean() < square.score, (other, r.to_dict())
    assert not results["circle"].significant
    assert len(square.scores) == len(square.random_scores) == 10 and (square.accuracies == 1).all()
    summary = square.to_dict()
    assert summary["class"] == 1 and summary["layer"] == LAYER and summary["significant"] is True


def test_linear_cav_points_to_the_concept():
    rng = np.random.default_rng(0)
    negative = rng.standard_normal((40, 500))
    positive = rng.standard_normal((30, 500))
    positive[:, 7] += 3.0  # the concept lives on feature 7
    cav, accuracy = linear_cav(positive, negative)
    assert accuracy == 1.0 and np.argmax(cav) == 7 and np.linalg.norm(cav) == pytest.approx(1.0)


def test_random_sets_and_errors(shapes):
    sets = random_sets([np.zeros((45, 3, 4, 4))], runs=10, size=8)
    assert len(sets) == 10 and all(len(s) == 4 for s in sets)
    assert len(random_sets([np.zeros((3, 1))] * 12, runs=10, size=3)) == 12
    with pytest.raises(MethodError, match="give at least 20"):
        random_sets([np.zeros((15, 3))], runs=10, size=5)
    x = SHAPES["x"][:4]
    with pytest.raises(MethodError, match="at least 2 runs"):
        tcav(shapes.engine, x, x, [x], LAYER, runs=1)
    with pytest.raises(InputShapeError, match="no tensor 'nope'"):
        tcav(shapes.engine, x, x, [x] * 10, "nope")


def test_cli(tmp_path, cli):
    concept, random = _concept_and_random()
    np.save(tmp_path / "concept.npy", concept)
    np.save(tmp_path / "random.npy", random)
    np.save(tmp_path / "squares.npy", SHAPES["x"][SHAPES["y"] == 1])
    result = cli("tcav", MODELS / "shapes_cnn.onnx", "--concept", tmp_path / "concept.npy", "--random",
                 tmp_path / "random.npy", "--inputs", tmp_path / "squares.npy", "--layer", LAYER, "--class", 1,
                 "--out", tmp_path / "tcav.json")
    assert result.returncode == 0, result.stderr
    assert "for class 1 at relu_1" in result.stdout and ": significant at α = 0.05" in result.stdout
    saved = json.loads((tmp_path / "tcav.json").read_text())
    assert saved["significant"] and saved["p_value"] < 0.05 and len(saved["scores"]) == 10
    missing = cli("tcav", MODELS / "shapes_cnn.onnx", "--concept", tmp_path / "nope", "--random", tmp_path,
                  "--inputs", tmp_path / "squares.npy", "--layer", LAYER)
    assert missing.returncode == 1 and "nope" in missing.stderr
