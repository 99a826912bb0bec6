"""LRP and Deep Taylor: conservation, known identities, presets, errors."""

import numpy as np
import pytest
from onnx import numpy_helper

from builders import conv_classifier
from conftest import MODELS
from onnxlens import Explainer, errors, import_model
from onnxlens.graph_ops.backward.relevance import PRESETS
from onnxlens.methods import MethodError

SHIPPED = {"digits": ("digits_cnn.onnx", "digits"), "shapes": ("shapes_cnn.onnx", "shapes")}
#: Presets whose rules conserve relevance whatever the signs (αβ does not when a layer's
#: inputs give no negative contribution: its β share is lost).
CONSERVATIVE = ["epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "deep_taylor"]


def _data(which):
    return np.load(MODELS / "samples" / SHIPPED[which][1] / "test.npz")["x"][:3]


def _without_biases(path):
    model = import_model(path).model
    biases = {n.input[2] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    for t in model.graph.initializer:
        if t.name in biases:
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
    return Explainer(import_model(model.SerializeToString()), device="cpu")


@pytest.fixture(scope="module", params=list(SHIPPED))
def unbiased(request):
    return request.param, _without_biases(MODELS / SHIPPED[request.param][0])


@pytest.mark.parametrize("preset", CONSERVATIVE)
def test_relevance_is_conserved_without_biases(preset, unbiased):
    which, explainer = unbiased
    e = explainer.explain(_data(which), "lrp", preset=preset, epsilon=1e-9)
    for tensor, gap in e.diagnostics["conservation_gap"].items():
        assert (gap / np.abs(e.score)).max() <= 1e-4, tensor


@pytest.mark.parametrize("which", list(SHIPPED))
def test_lrp_epsilon_to_zero_is_input_times_gradient(which):
    """A known identity for ReLU networks (Ancona et al., 2018)."""
    explainer = Explainer(MODELS / SHIPPED[which][0], device="cpu")
    x = _data(which)
    lrp = explainer.explain(x, "lrp", preset="epsilon", epsilon=1e-9).attribution
    ixg = explainer.explain(x, "input_x_gradient").attribution
    assert np.linalg.norm(lrp - ixg) / np.linalg.norm(ixg) <= 1e-4


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("which", list(SHIPPED))
def test_every_preset_runs_on_shipped_models(preset, which):
    explainer = Explainer(MODELS / SHIPPED[which][0], device="cpu")
    x = _data(which)
    e = explainer.explain(x, "lrp", preset=preset)
    assert e.attribution.shape == x.shape and np.isfinite(e.attribution).all()
    assert e.heatmap.shape == (3, *x.shape[2:])
    assert set(e.diagnostics["conservation_gap"]) >= {explainer.engine.input_name}


def test_layer_relevance_and_deep_taylor():
    explainer = Explainer(MODELS / "digits_cnn.onnx", device="cpu")
    x = _data("digits")
    layer, shape, _ = explainer.engine.layers()[-1]
    e = explainer.explain(x, "lrp", layer=layer)
    assert e.layer_map.shape == (3, *shape[2:])
    dt = explainer.explain(x, "deep_taylor")
    np.testing.assert_allclose(dt.attribution, explainer.explain(x, "lrp", preset="deep_taylor").attribution)
    assert dt.method == "deep_taylor"


def test_bad_preset_and_alpha_beta():
    explainer = Explainer(MODELS / "digits_cnn.onnx", device="cpu")
    x = _data("digits")[:1]
    with pytest.raises(MethodError, match="unknown preset 'nope'"):
        explainer.explain(x, "lrp", preset="nope")
    with pytest.raises(MethodError, match="alpha - beta = 1"):
        explainer.explain(x, "lrp", preset="epsilon_alpha2_beta1", alpha=3.0, beta=1.0)


def test_unsupported_op_on_the_relevance_path_is_named():
    model = conv_classifier()
    model.graph.node[1].op_type = "Asinh"
    explainer = Explainer(model.SerializeToString(), device="cpu")
    with pytest.raises(errors.UnsupportedOperatorError, match="'Asinh'"):
        explainer.explain(np.zeros((1, 3, 8, 8), np.float32), "lrp")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("which", list(SHIPPED))
def test_cli_lrp_every_preset(preset, which, tmp_path, cli):
    x = _data(which)[:1]
    np.save(tmp_path / "x.npy", x)
    result = cli("explain", MODELS / SHIPPED[which][0], "--input", tmp_path / "x.npy", "--method", "lrp",
                 "--param", f"preset={preset}", "--param", "epsilon=1e-5", "--out", tmp_path / "r.npz")
    assert result.returncode == 0, result.stderr
    attribution = np.load(tmp_path / "r.npz")["attribution"]
    assert attribution.shape == x.shape and np.isfinite(attribution).all() and np.abs(attribution).sum() > 0


def _dense_layer_relevance(rule, w, b, x, relevance):
    from onnx import helper as h

    from builders import make_model, vi
    from onnxlens.graph_ops.backward import RuleSet, append_vjp, by_op
    from vjp_check import with_run_shapes, _session

    model = make_model([h.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [vi("x", list(x.shape))],
                       [vi("y", 2)], [("w", w), ("b", b)])
    model = with_run_shapes(model, {"x": x})
    vjp = append_vjp(model, ["y"], ["x"], RuleSet(name="test").with_rule(by_op("Gemm"), rule))
    session = _session(vjp.model)
    names = [o.name for o in session.get_outputs()]
    return session.run(None, {"x": x, vjp.seeds["y"]: relevance})[names.index(vjp.grads["x"])]


def test_flat_and_wsquare_rules_by_hand():
    from onnxlens.graph_ops.backward.relevance import flat_rule, wsquare_rule

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x, r = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    flat = _dense_layer_relevance(flat_rule(), w, b, x, r)
    np.testing.assert_allclose(flat, np.repeat(r.sum(axis=1, keepdims=True) / 4, 4, axis=1), rtol=1e-5)
    square = _dense_layer_relevance(wsquare_rule(), w, b, x, r)
    share = (w ** 2) / ((w ** 2).sum(axis=1) + b ** 2)[:, None]  # Zennit squares the bias too
    np.testing.assert_allclose(square, r @ share, rtol=1e-5)


@pytest.mark.parametrize("preset", PRESETS)
def test_dense_layer_as_matmul_plus_add_gets_the_gemm_rules(preset):
    x = np.random.default_rng(3).random((2, 3, 8, 8), dtype=np.float32)
    got, want = (Explainer(import_model(conv_classifier(head=head).SerializeToString()), device="cpu")
                 .explain(x, "lrp", preset=preset, target=[1, 2]).attribution for head in ("matmul", "gemm"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_epsilon_rule_on_a_batched_matmul_by_hand():
    """A MatMul over a rank-3 tensor stays MatMul (no Gemm form); its bias Add passes relevance
    on and the MatMul takes the bias into z as Gemm does: R_in = x ⊙ (R / (z + ε·sign(z))) Wᵀ,
    z = xW + b."""
    from onnx import helper as h

    from builders import make_model, vi
    from onnxlens.graph_ops.backward import append_vjp
    from onnxlens.graph_ops.backward.relevance import composite
    from vjp_check import _session, with_run_shapes

    rng = np.random.default_rng(4)
    w, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    x, r = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((2, 3, 5)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["y"])]
    model = with_run_shapes(make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", 3)], [("w", w), ("b", b)]), {"x": x})
    vjp = append_vjp(model, ["y"], ["x"], composite("epsilon", epsilon=0.1))
    session = _session(vjp.model)
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, {"x": x, vjp.seeds["y"]: r})[names.index(vjp.grads["x"])]
    z = x @ w + b
    np.testing.assert_allclose(got, x * ((r / (z + 0.1 * np.where(z >= 0, 1, -1))) @ w.T), rtol=1e-4, atol=1e-6)


def test_relevance_that_is_not_conserved_says_so(digits):
    """LRP-ε on the digits model leaves |Σ relevance − score| above half the mean |score| on
    some rows: one warning line, its ratio in the diagnostics; a wider max_gap accepts it."""
    x = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:16]
    loose = digits.explain(x, "lrp", preset="epsilon")
    assert len(loose.warnings) == 1 and "relevance is not conserved for" in loose.warnings[0]
    ratio = loose.diagnostics["relevance_ratio"]
    np.testing.assert_allclose(ratio * loose.score, loose.attribution.reshape(16, -1).sum(axis=1), rtol=1e-4)
    assert digits.explain(x, "lrp", preset="epsilon", max_gap=1e9).warnings == []
    assert digits.explain(x, "lrp").warnings == []  # the default composite conserves it here
