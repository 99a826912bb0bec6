"""Adversarial probes on the digits model: FGSM flips with a small ε, DeepFool with a smaller
change still, the one-pixel attack changes one pixel; each probe reports how the map moved."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens.evaluation import MetricError, evaluate
from onnxlens.evaluation.attacks import attack, probe

DIGITS = np.load(MODELS / "samples" / "digits" / "test.npz")


def test_fgsm_flips_digits_with_a_small_epsilon(digits):
    result = probe(digits, DIGITS["x"][:20], "gradient", "fgsm", epsilon=0.05)
    assert result.flipped.mean() >= 0.8
    np.testing.assert_allclose(result.perturbation, 0.05, rtol=1e-5)
    assert result.adversarial.shape == (20, 1, 32, 32) and (result.after != result.before).sum() == result.flipped.sum()
    assert result.dice.shape == result.ssim.shape == (20,) and result.dice.mean() < 0.6


def test_deepfool_flips_every_input_with_less_than_fgsm_needs(digits):
    x = DIGITS["x"][:10]
    result = probe(digits, x, "gradient", "deepfool")
    assert result.flipped.all() and result.perturbation.max() < 0.05


def test_one_pixel_attack_changes_one_pixel(digits):
    x = DIGITS["x"][:6]
    target = digits.explain(x, "gradient").target
    attacked = attack(digits.engine, x, target, "one_pixel", maxiter=15, popsize=30)
    changed = (attacked != x).any(axis=1).reshape(len(x), -1).sum(axis=1)
    assert (changed <= 1).all() and changed.sum() >= 1
    again = attack(digits.engine, x, target, "one_pixel", maxiter=15, popsize=30)
    assert np.array_equal(attacked, again)  # seeded


def test_adversarial_stability_takes_each_attack(digits):
    x = DIGITS["x"][:4]
    results = evaluate(digits, x, ["gradient"], ["adversarial_stability"],
                       params={"adversarial_stability": {"attack": "deepfool"}}, baselines=())
    entry = results["metrics"]["adversarial_stability"]["results"]["gradient"]
    assert all(entry["flipped"]) and 0 <= entry["mean"] <= 1
    with pytest.raises(MetricError, match="unknown attack 'pgd'"):
        evaluate(digits, x, ["gradient"], ["adversarial_stability"], params={"adversarial_stability": {"attack": "pgd"}},
                 baselines=())
