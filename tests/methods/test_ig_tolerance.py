"""Integrated Gradients to a stated accuracy: every row ends within the tolerance of
completeness (checked against forward scores), each row's result is the fixed-step rule at the
count it reports (the nested midpoints reuse their gradients exactly), and what cannot be
reached is a warning."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens.methods import MethodError

X = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:6]


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_every_row_reaches_the_tolerance_and_equals_its_fixed_rule(digits, rule):
    got = digits.explain(X, "integrated_gradients", tolerance=0.01, quadrature_rule=rule)
    engine = digits.engine
    scores = engine.forward(np.concatenate([X, np.zeros_like(X)]))[engine.score_name()]
    rows = np.arange(len(X))
    change = scores[rows, got.target].astype(np.float64) - scores[rows + len(X), got.target]
    relative = np.abs(got.attribution.reshape(len(X), -1).sum(axis=1, dtype=np.float64) - change) / np.abs(change)
    np.testing.assert_allclose(got.diagnostics["relative_gap"], relative, rtol=1e-4, atol=1e-7)
    assert (relative <= 0.01).all() and not got.warnings
    steps = got.diagnostics["steps"]
    assert len(set(steps.tolist())) > 1  # rows stop at their own counts
    for row in (int(np.argmin(steps)), int(np.argmax(steps))):
        fixed = digits.explain(X[row:row + 1], "integrated_gradients", got.target[row:row + 1], steps=int(steps[row]),
                               quadrature_rule=rule)
        np.testing.assert_allclose(got.attribution[row:row + 1], fixed.attribution, rtol=1e-4, atol=1e-7)


def test_a_tolerance_out_of_reach_is_a_warning(digits):
    got = digits.explain(X[:2], "integrated_gradients", tolerance=1e-6, max_steps=16)
    assert (got.diagnostics["steps"] == 16).all() and (got.diagnostics["relative_gap"] > 1e-6).all()
    assert "2 of 2 input(s) stay above the tolerance 1e-06 at 16 steps" in got.warnings[0]


@pytest.mark.parametrize("params, message", [({"tolerance": -0.1}, "tolerance must be 0"),
                                             ({"tolerance": 0.01, "max_steps": 2}, "max_steps must be at least 4")])
def test_bad_tolerance_parameters_are_named(digits, params, message):
    with pytest.raises(MethodError, match=message):
        digits.explain(X[:1], "integrated_gradients", **params)
