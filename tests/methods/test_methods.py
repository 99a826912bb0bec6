"""Gradient-family methods through the Python API and the command line."""

import json

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer, errors
from onnxlens.methods import METHODS, Explanation, MethodError
from onnxlens.methods.gradients import quadrature

GRADIENT_FAMILY = ["gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_squared",
                   "vargrad", "guided_backprop", "deconvnet"]
CAM_FAMILY = ["cam", "gradcam", "gradcam_plus_plus", "guided_gradcam", "eigencam", "eigengradcam", "layercam", "fem"]
SHAPES = np.load(MODELS / "samples" / "shapes" / "test.npz")
DIGITS = np.load(MODELS / "samples" / "digits" / "test.npz")


def test_registry_lists_every_method():
    assert set(GRADIENT_FAMILY + CAM_FAMILY) <= set(METHODS)


@pytest.mark.parametrize("method", GRADIENT_FAMILY + CAM_FAMILY)
@pytest.mark.parametrize("which", ["shapes", "digits"])
def test_every_method_runs_on_every_shipped_model(method, which, shapes, digits):
    explainer, data = (shapes, SHAPES) if which == "shapes" else (digits, DIGITS)
    x = data["x"][:3]
    params = {"samples": 4} if method in ("smoothgrad", "smoothgrad_squared", "vargrad") else {}
    e = explainer.explain(x, method, **params)
    assert e.attribution.shape == x.shape and e.heatmap.shape == (3, *x.shape[2:])
    assert np.isfinite(e.attribution).all() and np.abs(e.attribution).sum() > 0
    assert e.method == method and e.target.shape == (3,) and e.score.shape == (3,)
    predicted = explainer.engine.forward(x)[explainer.engine.score_name()].argmax(axis=1)
    np.testing.assert_array_equal(e.target, predicted)


def test_single_input_without_batch_axis(digits):
    e = digits.explain(DIGITS["x"][0], "gradient", target=3)
    assert e.attribution.shape == (1, 1, 32, 32) and e.target.tolist() == [3]


def test_wrong_shape_is_a_clear_error(digits):
    with pytest.raises(errors.InputShapeError, match=r"takes \[N, 1, 32, 32\]"):
        digits.explain(np.zeros((2, 3, 32, 32), np.float32), "gradient")


def test_bad_target_method_and_parameter(digits):
    x = DIGITS["x"][:1]
    with pytest.raises(MethodError, match="class index in 0..9"):
        digits.explain(x, "gradient", target=10)
    with pytest.raises(MethodError, match="unknown method 'gradcamm'; available: .*gradient"):
        digits.explain(x, "gradcamm")
    with pytest.raises(MethodError, match="has no parameter 'stepz'; its parameters: .*steps"):
        digits.explain(x, "integrated_gradients", stepz=3)
    with pytest.raises(MethodError, match="takes a int, got 'many'"):
        digits.explain(x, "integrated_gradients", steps="many")


@pytest.mark.parametrize("method", ["gradient", "gradcam", "lrp", "occlusion"])
def test_one_spelling_of_which_score_is_explained(method, tmp_path):
    """``score`` = logit (behind the model's trailing Softmax) or probability, for every kind
    of method; anything else is one clear error."""
    import onnx

    from builders import conv_classifier

    onnx.save(conv_classifier(softmax=True, size=16), tmp_path / "m.onnx")
    explainer = Explainer(tmp_path / "m.onnx", device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    logit = explainer.explain(x, method, score="logit")
    probability = explainer.explain(x, method, score="probability")
    assert np.all((probability.score > 0) & (probability.score < 1))
    assert not np.allclose(logit.score, probability.score)
    with pytest.raises(errors.InvalidTargetError, match="score must be one of logit, probability, got 'prob'"):
        explainer.explain(x, method, score="prob")


def test_scores_not_one_row_per_input_are_a_clear_error():
    """A graph whose output rows do not follow the input batch has no class per row to pick."""
    from onnx import helper

    from builders import make_model, vi

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["w", "m"], ["logits"])]
    model = make_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("logits", [32, 10])],
                       [("w", np.ones((32, 10), np.float32))], opset=17)
    with pytest.raises(MethodError, match=r"'logits' has shape \[32, 10\] for 2 input row\(s\)"):
        Explainer(model.SerializeToString(), device="cpu").explain(np.ones((2, 3, 8, 8), np.float32), "gradient")


def test_input_x_gradient_is_input_times_gradient(digits):
    x = DIGITS["x"][:2]
    g = digits.explain(x, "gradient").attribution
    np.testing.assert_allclose(digits.explain(x, "input_x_gradient").attribution, x * g, rtol=1e-6)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid"])
def test_quadrature_weights_integrate_polynomials(rule):
    alphas, weights = quadrature(rule, 64)
    total = 63 / 64 if rule == "riemann_trapezoid" else 1.0  # Captum's trapezoid steps by 1/n
    assert weights.sum() == pytest.approx(total) and alphas.min() >= 0 and alphas.max() <= 1
    assert (weights * alphas).sum() == pytest.approx(0.5 * total, abs=1e-2)


def test_integrated_gradients_completeness_gap_shrinks(digits):
    x = DIGITS["x"][:2]
    gaps = [digits.explain(x, "integrated_gradients", steps=s, quadrature_rule="riemann_right")
            .diagnostics["completeness_gap"].mean() for s in (4, 16, 64)]
    assert gaps[0] > gaps[1] > gaps[2]


@pytest.mark.parametrize("baseline", ["zeros", "blur", "uniform"])
def test_integrated_gradients_baselines(baseline, digits):
    x = DIGITS["x"][:2]
    e = digits.explain(x, "integrated_gradients", baseline=baseline, steps=32)
    total = e.attribution.reshape(2, -1).sum(axis=1)
    expected = e.score - e.diagnostics["baseline_score"]
    np.testing.assert_allclose(total, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def test_integrated_gradients_array_baseline_equal_to_input_gives_zero(digits):
    x = DIGITS["x"][:1]
    e = digits.explain(x, "integrated_gradients", baseline=x.copy(), steps=8)
    assert np.abs(e.attribution).max() == 0


def test_smoothgrad_is_seeded(shapes):
    x = SHAPES["x"][:2]
    a = shapes.explain(x, "smoothgrad", samples=6, seed=3).attribution
    b = shapes.explain(x, "smoothgrad", samples=6, seed=3).attribution
    c = shapes.explain(x, "smoothgrad", samples=6, seed=4).attribution
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smoothgrad_with_given_noise_is_the_mean_of_gradients(digits):
    x = DIGITS["x"][:2]
    noise = np.random.default_rng(0).normal(0, 0.1, (3, *x.shape)).astype(np.float32)
    e = digits.explain(x, "smoothgrad", noise=noise)
    target = e.target
    expected = np.mean([digits.explain(x + n, "gradient", target=target).attribution for n in noise], axis=0)
    np.testing.assert_allclose(e.attribution, expected, rtol=1e-5, atol=1e-7)
    var = digits.explain(x, "vargrad", noise=noise).attribution
    grads = np.stack([digits.explain(x + n, "gradient", target=target).attribution for n in noise])
    np.testing.assert_allclose(var, grads.var(axis=0), rtol=1e-4, atol=1e-9)


def test_probability_gradient_saturates_on_a_confident_sample(shapes):
    """Seed 000's saturation pitfall: through a confident softmax the gradient nearly vanishes."""
    x = SHAPES["x"]
    probs = shapes.engine.forward(x)["probabilities"]
    confident = x[[int(probs.max(axis=1).argmax())]]
    logit = shapes.explain(confident, "gradient").attribution
    prob = shapes.explain(confident, "gradient", score="probability").attribution
    assert probs.max() > 0.999
    assert np.linalg.norm(prob) < 1e-2 * np.linalg.norm(logit)


def test_guided_backprop_and_deconvnet_differ_from_the_gradient(digits):
    x = DIGITS["x"][:2]
    g = digits.explain(x, "gradient").attribution
    gb = digits.explain(x, "guided_backprop").attribution
    dc = digits.explain(x, "deconvnet").attribution
    assert not np.allclose(g, gb) and not np.allclose(g, dc) and not np.allclose(gb, dc)


# --- class activation maps ---


@pytest.mark.parametrize("method", CAM_FAMILY)
def test_cam_maps_shape_range_and_default_layer(method, shapes):
    x = SHAPES["x"][:2]
    e = shapes.explain(x, method)
    layer, shape, _ = shapes.engine.layers()[-1]
    assert e.params["layer"] == layer and e.layer_map.shape == (2, *shape[2:])
    assert e.heatmap.min() >= 0 and e.heatmap.max() <= 1
    if method != "cam":  # CAM is signed; the others end in a ReLU
        assert e.layer_map.min() >= 0


def test_a_pooled_vector_laid_out_channels_last_is_no_feature_map(tmp_path):
    """ConvNeXt's head pools to [N, C, 1, 1] and transposes to [N, 1, 1, C] for its LayerNorm:
    1×C is not a map, so the default CAM layer stays the last convolution's output."""
    import onnx
    from onnx import helper

    from builders import make_model, vi

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["features"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["features"], ["relu"]),
             helper.make_node("ReduceMean", ["relu"], ["pooled"], axes=[2, 3], keepdims=1),
             helper.make_node("Transpose", ["pooled"], ["channels_last"], perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["channels_last"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    weights = [("w", rng.standard_normal((6, 3, 3, 3)).astype(np.float32)),
               ("fc", rng.standard_normal((4, 6)).astype(np.float32))]
    onnx.save(make_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("logits", ["N", 4])], weights, opset=17),
              tmp_path / "m.onnx")
    explainer = Explainer(tmp_path / "m.onnx", device="cpu")
    assert [c.name for c in explainer.engine.layers()] == ["features", "relu"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert explainer.explain(x, "gradcam").layer_map.shape == (2, 8, 8)


def test_cam_equals_gradcam_times_positions_on_a_gap_linear_head(shapes):
    x = SHAPES["x"][:3]
    cam, grad = shapes.explain(x, "cam"), shapes.explain(x, "gradcam")
    h, w = cam.layer_map.shape[1:]
    np.testing.assert_allclose(np.maximum(cam.layer_map, 0), grad.layer_map * h * w, rtol=1e-4, atol=1e-4)


def test_cam_refuses_a_layer_without_gap_head(shapes):
    early = shapes.engine.layers()[0][0]
    with pytest.raises(MethodError, match="cam needs the layer to feed global average pooling"):
        shapes.explain(SHAPES["x"][:1], "cam", layer=early)


def test_explicit_layer_and_unknown_layer(shapes):
    name, shape, _ = shapes.engine.layers()[2]
    e = shapes.explain(SHAPES["x"][:1], "gradcam", layer=name)
    assert e.layer_map.shape == (1, *shape[2:])
    with pytest.raises(errors.InputShapeError, match="no tensor 'nope'; layer candidates include"):
        shapes.explain(SHAPES["x"][:1], "gradcam", layer="nope")


def test_fem_k_changes_the_map(digits):
    x = DIGITS["x"][:2]
    assert not np.allclose(digits.explain(x, "fem", k=1.0).layer_map, digits.explain(x, "fem", k=2.0).layer_map)


def test_cli_cam_writes_layer_map(tmp_path, cli):
    np.save(tmp_path / "x.npy", DIGITS["x"][:2])
    result = cli("explain", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--method", "gradcam",
                 "--out", tmp_path / "e.npz")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "e.npz")["layer_map"].shape == (2, 8, 8)


def test_inspect_lists_layers(cli):
    info = json.loads(cli("inspect", MODELS / "digits_cnn.onnx", "--layers", "--json").stdout)
    assert info["layers"][-1]["default"] and info["layers"][-1]["shape"][1:] == [64, 8, 8]
    assert info["layers"][-1]["layout"] == "channels-first 8×8"
    assert sum(layer["default"] for layer in info["layers"]) == 1


# --- the command line -------------------------------------------------------------------------


def test_cli_explain_npy_to_npz(tmp_path, cli):
    np.save(tmp_path / "x.npy", DIGITS["x"][:2])
    result = cli("explain", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--method",
                 "integrated_gradients", "--param", "steps=8", "--out", tmp_path / "e.npz")
    assert result.returncode == 0, result.stderr
    saved = np.load(tmp_path / "e.npz")
    assert saved["attribution"].shape == (2, 1, 32, 32) and saved["heatmap"].shape == (2, 32, 32)
    assert saved["target"].shape == (2,) and saved["score"].shape == (2,)
    again = Explanation.from_arrays(saved)  # the one format: the audit's run folder reads it too
    assert again.method == "integrated_gradients" and again.params["steps"] == 8
    assert again.diagnostics["completeness_gap"].shape == (2,)


def test_explanation_arrays_round_trip_split_and_join(digits):
    x = DIGITS["x"][:4]
    lrp = digits.explain(x, "lrp")  # a per-tensor diagnostic: the input's entry is kept
    back = Explanation.from_arrays(lrp.to_arrays())
    np.testing.assert_array_equal(back.attribution, lrp.attribution)
    np.testing.assert_array_equal(back.diagnostics["conservation_gap"],
                                  next(iter(lrp.diagnostics["conservation_gap"].values())))
    cam = digits.explain(x, "gradcam")
    joined = Explanation.concatenate([cam.take([0, 1]), cam.take([2, 3])])
    np.testing.assert_array_equal(joined.heatmap, cam.heatmap)
    np.testing.assert_array_equal(joined.layer_map, cam.layer_map)
    assert joined.timings["total"] == pytest.approx(cam.timings["total"])
    np.testing.assert_array_equal(cam.take([3, 1]).target, cam.target[[3, 1]])


def test_cli_explain_image_to_png_overlay(tmp_path, cli):
    result = cli("explain", MODELS / "shapes_cnn.onnx", "--input", MODELS / "samples/shapes/000_square.png",
                 "--method", "gradient", "--target", "1", "--colormap", "viridis", "--out", tmp_path / "o.png")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "o.png").size == (512, 256)


def test_cli_folder_keeps_going_past_a_bad_image(tmp_path, cli):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("000_square.png", "001_circle.png"):
        (folder / name).write_bytes((MODELS / "samples/shapes" / name).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    result = cli("explain", MODELS / "shapes_cnn.onnx", "--input", folder, "--method", "gradient",
                 "--format", "npz", "--out", tmp_path / "out")
    assert result.returncode == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000_square.npz", "001_circle.npz"]
    assert len(result.stderr.strip().splitlines()) == 1 and "broken.png" in result.stderr


@pytest.mark.parametrize("args, phrase", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--param", "stepz=3", "--method", "integrated_gradients"], "has no parameter 'stepz'"),
    (["--param", "steps"], "--param takes key=value"),
    (["--layer", "t"], "has no parameter 'layer'"),
    (["--out", "e.txt"], "--out must end in .npz or .png"),
])
def test_cli_explain_errors_are_one_line(args, phrase, tmp_path, cli):
    np.save(tmp_path / "x.npy", DIGITS["x"][:1])
    result = cli("explain", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz", *args)
    assert result.returncode == 1 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_explain_wrong_npy_shape(tmp_path, cli):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = cli("explain", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz")
    assert result.returncode == 1 and "takes [N, 1, 32, 32]" in result.stderr


def test_explanation_params_are_recorded(digits):
    e = digits.explain(DIGITS["x"][:1], "integrated_gradients", steps=8)
    assert e.params["steps"] == 8 and e.params["quadrature_rule"] == "gausslegendre"
    json.dumps({k: v for k, v in e.params.items() if not isinstance(v, np.ndarray)})


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("baseline", ["zeros", "blur"])
@pytest.mark.parametrize("which", ["shapes", "digits"])
def test_deeplift_summation_to_delta(which, baseline, rule, shapes, digits):
    explainer, data = (shapes, SHAPES) if which == "shapes" else (digits, DIGITS)
    e = explainer.explain(data["x"][:4], "deeplift", baseline=baseline, rule=rule)
    delta = e.score - e.diagnostics["baseline_score"]
    assert (e.diagnostics["summation_gap"] <= 1e-4 * np.maximum(1, np.abs(delta))).all()


def test_deeplift_rule_choice(digits):
    with pytest.raises(MethodError, match="rule must be 'rescale' or 'reveal_cancel'"):
        digits.explain(DIGITS["x"][:1], "deeplift", rule="cancel")
    with pytest.raises(MethodError, match="maxpool must be 'rescale' or 'gradient'"):
        digits.explain(DIGITS["x"][:1], "deeplift", maxpool="max")


def test_reveal_cancel_differs_from_rescale(shapes):
    x = SHAPES["x"][:2]
    rescale, reveal = (shapes.explain(x, "deeplift", rule=r).attribution for r in ("rescale", "reveal_cancel"))
    assert np.linalg.norm(rescale - reveal) > 1e-3 * np.linalg.norm(rescale)


def _min_network():
    """o = i₁ − ReLU(i₁ − i₂) = min(i₁, i₂): the DeepLIFT paper's example (Shrikumar et al.,
    2017, Fig. 3) of where Rescale gives all credit to one input."""
    from onnx import helper as h

    from builders import make_model, vi
    from vjp_check import with_run_shapes

    nodes = [h.make_node("Gemm", ["x", "w_diff"], ["z"]), h.make_node("Relu", ["z"], ["h"]),
             h.make_node("Gemm", ["x", "w_first"], ["a"]), h.make_node("Sub", ["a", "h"], ["o"])]
    weights = [("w_diff", np.array([[1.0], [-1.0]], np.float32)), ("w_first", np.array([[1.0], [0.0]], np.float32))]
    model = make_model(nodes, [vi("x", ["N", 2])], [vi("o", ["N", 1])], weights, opset=18)
    return with_run_shapes(model, {"x": np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize("rule, expected", [("rescale", [0.0, 1.0]), ("reveal_cancel", [0.5, 0.5])])
def test_deeplift_rules_by_hand_on_the_min_network(rule, expected):
    """x = (3, 1), x₀ = (0, 0): Δz = 2 with Δz⁺ = 3, Δz⁻ = −1, so RevealCancel gives
    Δh⁺ = ½(3 − 0) + ½(2 − 0) = 2.5 and Δh⁻ = ½(0 − 0) + ½(2 − 3) = −0.5, multipliers 5/6 and
    1/2: i₁ gets 3 − 2.5 = 0.5 and i₂ gets 0.5; Rescale (multiplier 1) gives (0, 1)."""
    from onnxlens.graph_ops.backward import append_vjp
    from onnxlens.graph_ops.backward.deeplift import DEEPLIFT_RULES
    from vjp_check import _session

    vjp = append_vjp(_min_network(), ["o"], ["x"], DEEPLIFT_RULES[(rule, "rescale")])
    session = _session(vjp.model)
    x, x0 = np.array([[3.0, 1.0]], np.float32), np.zeros((1, 2), np.float32)
    names = [o.name for o in session.get_outputs()]
    grads = session.run(None, {"x": np.concatenate([x, x0]), vjp.seeds["o"]: np.ones((2, 1), np.float32)})
    attribution = (x - x0) * grads[names.index(vjp.grads["x"])][:1]
    np.testing.assert_allclose(attribution[0], expected, atol=1e-6)
    assert attribution.sum() == pytest.approx(1.0)  # min(3, 1) − min(0, 0)


def test_deeplift_maxpool_variants_differ_only_through_maxpool(digits):
    x = DIGITS["x"][:2]
    exact = digits.explain(x, "deeplift")
    captum_like = digits.explain(x, "deeplift", maxpool="gradient")
    assert not np.allclose(exact.attribution, captum_like.attribution)
    np.testing.assert_allclose(exact.score, captum_like.score)


def test_a_non_finite_result_is_never_a_silent_success(save):
    """A dense layer with an infinite weight: scores and gradient are not finite, and the
    explanation is an error naming them, never a result."""
    from builders import conv_classifier
    from onnx import numpy_helper

    from onnxlens.errors import NonFiniteResultError

    model = conv_classifier()
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == "fc_w":
            weights = numpy_helper.to_array(tensor).copy()
            weights[0, :] = np.inf
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(weights, "fc_w"))
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    explainer = Explainer(save(model), device="cpu")
    with pytest.raises(NonFiniteResultError, match="score is not finite .* for 1 of 2 input.*first row 0"):
        explainer.explain(x, "gradient", target=[0, 1])
