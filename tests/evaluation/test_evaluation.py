"""Evaluation metrics: protocol tests on hand-made cases, the API, and the shipped models."""

import json

import numpy as np
import pytest
from onnx import helper

from builders import make_model, vi
from conftest import MODELS
from onnxlens import Explainer, Explanation, import_model
from onnxlens.evaluation import DEFAULT_METRICS, METRICS, MetricError, evaluate
from onnxlens.evaluation.agreement import auc, compare, ssim
from onnxlens.evaluation.faithfulness import impute
from onnxlens.evaluation.maps import boxes_to_masks
from onnxlens.evaluation.registry import EvalContext, run_metric

SHAPES = np.load(MODELS / "samples" / "shapes" / "test.npz")
SIZE = 8


def _linear_model(weights):
    """logits = [Σ w ⊙ x, 0] over a 1×8×8 input: every metric's value can be worked out by hand."""
    w = np.stack([weights.reshape(-1), np.zeros(weights.size)], axis=1).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"])]
    model = make_model(nodes, [vi("x", ["N", 1, SIZE, SIZE])], [vi("logits", ["N", 2])], [("w", w)], opset=18)
    return Explainer(import_model(model.SerializeToString()), device="cpu").engine


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((SIZE, SIZE))
    x = rng.random((3, 1, SIZE, SIZE), dtype=np.float32)
    return _linear_model(weights), weights, x


def _explanation(heatmap, attribution=None, target=None):
    n = len(heatmap)
    attribution = heatmap[:, None] if attribution is None else attribution
    return Explanation(attribution.astype(np.float32), heatmap, np.zeros(n, np.int64) if target is None else target,
                       np.zeros(n), "hand")


def _softmax0(logit):
    return 1 / (1 + np.exp(-logit))


def test_deletion_curve_by_hand(linear):
    engine, weights, x = linear
    heatmap = (weights * x[:, 0]).astype(np.float64)
    result = run_metric("deletion", EvalContext(engine, x), _explanation(heatmap), steps=4)
    for i in range(len(x)):
        order = np.argsort(-heatmap[i].ravel(), kind="stable")
        contributions = (weights * x[i, 0]).ravel()
        expected = [_softmax0(contributions.sum() - contributions[order[:k]].sum()) for k in (0, 16, 32, 48, 64)]
        np.testing.assert_allclose(result["curves"][i], expected, rtol=1e-5)
        assert result["per_image"][i] == pytest.approx(np.trapezoid(expected, dx=0.25), rel=1e-5)


def test_insertion_starts_blurred_and_ends_at_the_input(linear):
    engine, weights, x = linear
    heatmap = np.random.default_rng(1).random((3, SIZE, SIZE))
    result = run_metric("insertion", EvalContext(engine, x), _explanation(heatmap), steps=5)
    full = _softmax0((weights * x[:, 0]).sum(axis=(1, 2)))
    np.testing.assert_allclose(np.array(result["curves"])[:, -1], full, rtol=1e-5)


def test_region_perturbation_moves_whole_patches(linear):
    engine, weights, x = linear
    heatmap = np.zeros((3, SIZE, SIZE))
    heatmap[:, :4, :4] = 1.0  # the top-left patch first
    result = run_metric("pixel_flipping", EvalContext(engine, x), _explanation(heatmap), patch=4, steps=4,
                        score="logit")
    contributions = weights * x[:, 0]
    np.testing.assert_allclose(np.array(result["curves"])[:, 1], contributions.sum(axis=(1, 2))
                               - contributions[:, :4, :4].sum(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    assert result["higher_is_better"] is False
    assert run_metric("pixel_flipping", EvalContext(engine, x), _explanation(heatmap), order="lerf")["higher_is_better"]


def test_faithfulness_correlation_and_infidelity_of_an_exact_map(linear):
    """For a linear logit, input × weight predicts every subset's drop exactly, and the weight
    predicts every perturbation's effect exactly."""
    engine, weights, x = linear
    exact = _explanation(weights * x[:, 0], attribution=np.broadcast_to(weights, x.shape))
    ctx = EvalContext(engine, x)
    corr = run_metric("faithfulness_correlation", ctx, exact, subset_size=10, runs=30)
    np.testing.assert_allclose(corr["per_image"], 1.0, atol=1e-5)
    infid = run_metric("infidelity", ctx, exact, samples=20, normalize=False)
    np.testing.assert_allclose(infid["per_image"], 0.0, atol=1e-8)
    noisy = _explanation(weights * x[:, 0], attribution=np.random.default_rng(2).standard_normal(x.shape))
    assert min(run_metric("infidelity", ctx, noisy, samples=20)["per_image"]) > 1e-4


def test_noisy_linear_imputation_reproduces_a_ramp():
    y, x = np.mgrid[0:12, 0:12]
    image = np.stack([2.0 * x + y, x - 3.0 * y], axis=-1)
    removed = np.zeros((12, 12), bool)
    removed[3:9, 2:7] = True
    removed[5, 9] = True
    out = impute(image, removed, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(out, image, atol=1e-9)


def test_road_runs_and_its_curve_falls_for_the_exact_map(linear):
    engine, weights, x = linear
    ctx = EvalContext(engine, x)
    exact = run_metric("road", ctx, _explanation(weights * x[:, 0]), percentages="20,50,80", score="logit")
    reverse = run_metric("road", ctx, _explanation(-weights * x[:, 0]), percentages="20,50,80", score="logit")
    assert np.mean(exact["per_image"]) < np.mean(reverse["per_image"])
    with pytest.raises(MetricError, match="strictly between 0 and 100"):
        run_metric("road", ctx, _explanation(weights * x[:, 0]), percentages="0,50")


# --- localization -------------------------------------------------------------------------

def _masks():
    masks = np.zeros((4, SIZE, SIZE), bool)
    masks[0, 1:4, 2:6] = True
    masks[1, 5:8, 0:3] = True
    masks[2, 0:2, 0:8] = True
    masks[3, 4, 4] = True
    return masks


@pytest.mark.parametrize("name", ["pointing_game", "iou", "relevance_mass", "relevance_rank"])
def test_a_map_that_is_the_mask_scores_one(name, linear):
    masks = _masks()
    ctx = EvalContext(linear[0], np.zeros((4, 1, SIZE, SIZE), np.float32), masks)
    result = run_metric(name, ctx, _explanation(masks.astype(np.float64)))
    np.testing.assert_allclose(result["per_image"], 1.0)


def test_random_maps_score_near_chance(linear):
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 32, 32), bool)
    masks[:, 8:16, 8:24] = True  # 1/8 of the image
    heatmaps = rng.random((64, 32, 32))
    ctx = EvalContext(linear[0], np.zeros((64, 1, 32, 32), np.float32), masks)
    e = _explanation(heatmaps)
    assert np.mean(run_metric("relevance_mass", ctx, e)["per_image"]) == pytest.approx(0.125, abs=0.01)
    assert np.mean(run_metric("relevance_rank", ctx, e)["per_image"]) == pytest.approx(0.125, abs=0.03)
    assert np.mean(run_metric("pointing_game", ctx, e, tolerance=0)["per_image"]) == pytest.approx(0.125, abs=0.1)
    assert np.mean(run_metric("iou", ctx, e)["per_image"]) < 0.1


def test_pointing_game_tolerance(linear):
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 0:4, 0:4] = True
    heatmap = np.zeros((1, 32, 32))
    heatmap[0, 3, 14] = 1.0  # 11 px right of the mask
    result = run_metric("pointing_game", EvalContext(linear[0], np.zeros((1, 1, 32, 32), np.float32), masks),
                        _explanation(heatmap))
    assert result["per_image"] == [1.0] and result["per_image_strict"] == [0.0]


def test_top_k_intersection_and_empty_masks(linear):
    masks = _masks()
    masks[3] = False
    ctx = EvalContext(linear[0], np.zeros((4, 1, SIZE, SIZE), np.float32), masks)
    result = run_metric("top_k_intersection", ctx, _explanation(masks.astype(np.float64)), k=3)
    assert result["per_image"][:3] == [1.0, 1.0, 1.0] and result["per_image"][3] is None
    with pytest.raises(MetricError, match="k must be between 1 and 64"):
        run_metric("top_k_intersection", ctx, _explanation(masks.astype(np.float64)), k=65)


def test_boxes_become_masks():
    masks = boxes_to_masks([[[1, 2, 4, 3]], [], [[0, 0, 8, 8], [2, 2, 3, 3]]], 3, (SIZE, SIZE))
    assert masks[0].sum() == 3 and masks[0, 2, 1:4].all() and masks[1].sum() == 0 and masks[2].all()
    with pytest.raises(MetricError, match="does not fit"):
        boxes_to_masks([[[0, 0, 9, 4]]], 1, (SIZE, SIZE))


# --- complexity and agreement --------------------------------------------------------------

def test_sparseness_and_complexity_extremes(linear):
    uniform = np.ones((1, SIZE, SIZE))
    spike = np.zeros((1, SIZE, SIZE))
    spike[0, 2, 3] = 5.0
    ctx = EvalContext(linear[0], np.zeros((1, 1, SIZE, SIZE), np.float32))
    assert run_metric("sparseness", ctx, _explanation(uniform))["per_image"][0] == pytest.approx(0, abs=1e-6)
    assert run_metric("sparseness", ctx, _explanation(spike))["per_image"][0] == pytest.approx(1 - 1 / 64, abs=1e-5)  # Quantus adds 1e-7
    assert run_metric("complexity", ctx, _explanation(uniform))["per_image"][0] == pytest.approx(np.log(64))
    assert run_metric("complexity", ctx, _explanation(spike))["per_image"][0] == pytest.approx(0, abs=1e-9)


def test_identical_maps_agree_perfectly():
    a = np.random.default_rng(0).random((3, 16, 16))
    values = compare(a, a)
    for name, best in {"pearson": 1, "spearman": 1, "ssim": 1, "l1": 0, "kl": 0, "sim": 1, "dice": 1, "auc": 1}.items():
        np.testing.assert_allclose(values[name], best, atol=1e-9, err_msg=name)


def test_agreement_of_opposite_and_unrelated_maps():
    rng = np.random.default_rng(1)
    a = rng.random((8, 32, 32))
    opposite = compare(a, 1 - a)
    assert (opposite["pearson"] < -0.99).all() and (opposite["auc"] < 0.01).all() and (opposite["ssim"] < 0).all()
    unrelated = compare(a, rng.random((8, 32, 32)))
    assert abs(unrelated["pearson"].mean()) < 0.05 and abs(unrelated["auc"].mean() - 0.5) < 0.05


def test_auc_and_ssim_by_hand():
    scores = np.array([[[0.1, 0.4], [0.35, 0.8]]])
    positives = np.array([[[False, True], [False, True]]])
    assert auc(scores, positives)[0] == 1.0
    assert auc(scores, ~positives)[0] == 0.0
    constant = np.full((1, 8, 8), 0.5)
    assert ssim(constant, constant)[0] == pytest.approx(1.0)


# --- the API -------------------------------------------------------------------------------

def test_evaluate_is_json_ready_and_shows_baselines(shapes):
    x, masks = SHAPES["x"][:4], SHAPES["object_masks"][:4]
    ig = shapes.explain(x, "integrated_gradients", steps=8)
    results = evaluate(shapes, x, ["gradient", ig], masks=masks, params={"deletion": {"steps": 10}})
    json.dumps(results, allow_nan=False)
    assert set(results["metrics"]) == set(DEFAULT_METRICS)
    pointing = results["metrics"]["pointing_game"]["results"]
    assert {"gradient", "integrated_gradients", "baseline:center_surround", "baseline:spectral_residual",
            "baseline:local_entropy", "baseline:itti"} <= set(pointing)
    # faithfulness scores the baselines too, on the class the methods explained; complexity not
    assert "baseline:itti" in results["metrics"]["deletion"]["results"]
    assert "baseline:itti" not in results["metrics"]["sparseness"]["results"]
    assert results["metrics"]["deletion"]["results"]["gradient"]["params"]["steps"] == 10
    assert len(results["metrics"]["deletion"]["results"]["gradient"]["curve"]) == 11
    relative = ig.diagnostics["completeness_gap"] / np.abs(ig.score - ig.diagnostics["baseline_score"])
    np.testing.assert_allclose(results["metrics"]["completeness"]["results"]["integrated_gradients"]["per_image"],
                               relative, rtol=1e-6)
    assert results["metrics"]["completeness"]["results"]["gradient"]["mean"] is None
    assert "gradient | integrated_gradients" in results["agreement"]["pairs"]
    assert "gradient | baseline:itti" in results["agreement"]["pairs"]


def test_boxes_and_reference_maps(shapes):
    import onnxlens

    x = SHAPES["x"][:2]
    boxes = [[[10, 12, 30, 40]], [[0, 0, 16, 16], [40, 40, 64, 64]]]
    masks = boxes_to_masks(boxes, 2, (64, 64))
    reference = masks.copy()
    by_boxes = onnxlens.evaluate(shapes, x, ["gradient"], ["iou"], boxes=boxes, baselines=(), reference=reference)
    by_masks = onnxlens.evaluate(shapes, x, ["gradient"], ["iou"], masks=masks, baselines=())
    assert by_boxes["metrics"]["iou"] == {**by_masks["metrics"]["iou"], "results": {
        "gradient": {**by_masks["metrics"]["iou"]["results"]["gradient"],
                     "seconds": by_boxes["metrics"]["iou"]["results"]["gradient"]["seconds"]}}}
    assert "reference | gradient" in by_boxes["agreement"]["pairs"]
    with pytest.raises(MetricError, match="masks or boxes, not both"):
        onnxlens.evaluate(shapes, x, ["gradient"], ["iou"], masks=masks, boxes=boxes)


@pytest.mark.parametrize("kwargs, phrase", [
    ({"metrics": ["iou"]}, "needs masks or boxes"),
    ({"metrics": ["nope"]}, "unknown metric 'nope'"),
    ({"metrics": ["deletion"], "params": {"deletion": {"stepz": 3}}}, "has no parameter 'stepz'"),
    ({"metrics": ["deletion"], "params": {"iou": {}}}, "not run: 'iou'"),
    ({"masks": np.zeros((2, 8, 8), bool)}, "expected (2, 64, 64)"),
    ({"metrics": ["deletion"], "params": {"deletion": {"substrate_kind": "gray"}}}, "unknown substrate 'gray'"),
])
def test_evaluate_errors(kwargs, phrase, shapes):
    with pytest.raises(MetricError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        evaluate(shapes, SHAPES["x"][:2], ["gradient"], **kwargs)


def test_clever_hans_relevance_sits_on_the_watermark(shapes):
    """On watermarked squares the share of relevance on the 6×6 watermark (0.9 % of the image)
    is many times its area for every method, and highest for LRP."""
    square = list(SHAPES["classes"]).index("square")
    marked = SHAPES["has_watermark"] & (SHAPES["y"] == square)
    x, masks = SHAPES["x"][marked][:12], SHAPES["watermark_masks"][marked][:12]
    results = evaluate(shapes, x, ["gradient", "gradcam", "lrp"], ["relevance_mass"], masks=masks, target=square)
    area = masks.mean()
    mass = {k: v["mean"] for k, v in results["metrics"]["relevance_mass"]["results"].items()}
    assert all(mass[m] > 3 * area for m in ("gradient", "gradcam", "lrp")), (mass, area)
    assert mass["lrp"] > 0.25 and mass["lrp"] > max(v for k, v in mass.items() if k.startswith("baseline:"))


def test_insertion_beats_deletion_on_shapes(shapes):
    results = evaluate(shapes, SHAPES["x"][:24], ["gradient", "gradcam", "lrp"], ["insertion", "deletion"],
                       baselines=())
    for method in ("gradient", "gradcam", "lrp"):
        ins = results["metrics"]["insertion"]["results"][method]["mean"]
        dele = results["metrics"]["deletion"]["results"][method]["mean"]
        assert ins > dele + 0.3, (method, ins, dele)


# --- the command line ----------------------------------------------------------------------

def test_cli_evaluate_on_shapes_with_masks(tmp_path, cli):
    out = tmp_path / "r.json"
    result = cli("evaluate", MODELS / "shapes_cnn.onnx", "--input", MODELS / "samples" / "shapes" / "test.npz",
                 "--masks", MODELS / "samples" / "shapes" / "test.npz", "--masks-key", "object_masks", "--limit", "3",
                 "--method", "gradient,lrp", "--param", "deletion.steps=8", "--param", "lrp.preset=epsilon",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert results["n_images"] == 3 and results["explanations"]["lrp"]["params"]["preset"] == "epsilon"
    assert results["metrics"]["deletion"]["results"]["gradient"]["params"]["steps"] == 8
    assert "baseline:itti" in results["metrics"]["iou"]["results"] and "pointing_game" in result.stdout
    deletion = results["metrics"]["deletion"]["results"]["gradient"]
    assert f"{deletion['mean']:.3g} ± {deletion['standard_error']:.2g}" in result.stdout


@pytest.mark.parametrize("which", ["digits", "shapes"])
def test_cli_evaluate_every_metric_on_shipped_models(which, tmp_path, cli):
    x = np.load(MODELS / "samples" / which / "test.npz")["x"][:2]
    np.save(tmp_path / "x.npy", x)
    size = x.shape[-1]
    masks = np.zeros((2, size, size), bool)
    masks[:, size // 4:size // 2, size // 4:] = True
    np.save(tmp_path / "m.npy", masks)
    chosen = sorted(METRICS)
    result = cli("evaluate", MODELS / f"{which}_cnn.onnx", "--input", tmp_path / "x.npy", "--masks", tmp_path / "m.npy",
                 "--metric", ",".join(chosen), "--method", "gradient,gradcam",
                 "--param", "faithfulness_correlation.subset_size=50", "--param", "road.percentages=30,60",
                 "--param", "max_sensitivity.samples=3", "--param", "avg_sensitivity.samples=3",
                 "--param", "local_lipschitz.samples=3", "--out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "r.json").read_text())["metrics"]) == set(chosen)


@pytest.mark.parametrize("args, phrase", [
    (["--metric", "iou"], "needs masks or boxes"),
    (["--metric", "nope"], "unknown metric 'nope'"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--param", "deletion.stepz=3"], "has no parameter 'stepz'"),
    (["--param", "steps=3"], "NAME.key=value"),
    (["--param", "iou.threshold=0.5"], "neither a chosen method nor a chosen metric"),
    (["--out", "r.csv"], "--out must end in .json"),
    (["--masks", "missing.npy"], "does not exist"),
])
def test_cli_evaluate_errors_are_one_line(args, phrase, tmp_path, cli):
    np.save(tmp_path / "x.npy", np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:1])
    result = cli("evaluate", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--metric", "deletion",
                 "--out", tmp_path / "r.json", *args)
    assert result.returncode == 1 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- sanity and robustness -----------------------------------------------------------------

def _conv_bn_model(constants_as_nodes=False):
    rng = np.random.default_rng(5)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    weights = [("cw", w(4, 1, 3, 3)), ("cb", w(4)), ("s", 1 + 0.1 * w(4)), ("o", w(4)), ("m", w(4)),
               ("v", np.full(4, 0.5, np.float32)), ("fw", w(3, 4)), ("fb", w(3))]
    return make_model(nodes, [vi("x", ["N", 1, 6, 6])], [vi("y", 2)], weights, opset=18,
                      constants_as_nodes=constants_as_nodes)


@pytest.mark.parametrize("as_nodes", [False, True])
def test_randomize_redraws_only_the_chosen_layers(as_nodes):
    from onnxlens.graph_ops.randomize import parameter_layers, randomize
    from onnxlens.graph_ops.tensors import constant_arrays

    model = _conv_bn_model(as_nodes)
    layers = parameter_layers(model)
    assert [lay.name for lay in layers] == ["fc", "conv"]
    assert layers[1].parameters == ("cw", "cb", "s", "o")  # BatchNorm joins its conv; never m, v
    before = constant_arrays(model.graph)
    after = constant_arrays(randomize(model, layers[1].parameters, seed=3).graph)
    for name in before:
        changed = not np.array_equal(before[name], after[name])
        assert changed == (name in layers[1].parameters), name
    again = constant_arrays(randomize(model, layers[1].parameters, seed=3).graph)
    assert all(np.array_equal(after[k], again[k]) for k in after)  # seeded


def test_cascading_randomization_separates_gradient_from_guided_backprop(shapes):
    """Adebayo et al.'s finding: once the top layers are randomized, the gradient map changes
    while the guided-backprop map still looks like the original."""
    results = evaluate(shapes, SHAPES["x"][:16], ["gradient", "guided_backprop"], ["model_randomization"],
                       baselines=())["metrics"]["model_randomization"]["results"]
    assert results["gradient"]["layers"][0] == "node_linear" and len(results["gradient"]["layers"]) == 5
    top = {m: np.mean(results[m]["ssim_by_layer"][:2]) for m in results}
    assert top["guided_backprop"] > top["gradient"] + 0.3, top
    assert np.isfinite(results["gradient"]["spearman_by_layer"]).all()


def test_random_logit_finds_class_insensitive_maps(shapes):
    results = evaluate(shapes, SHAPES["x"][:12], ["guided_backprop", "lrp"], ["random_logit"],
                       baselines=())["metrics"]["random_logit"]["results"]
    assert all(o != t for o, t in zip(results["lrp"]["other_class"], shapes.explain(SHAPES["x"][:12]).target))
    assert results["guided_backprop"]["mean"] > results["lrp"]["mean"] + 0.4


def test_robustness_of_a_linear_model(linear):
    """The gradient of a linear model does not move at all; input × gradient moves by δ ⊙ w."""
    engine, weights, x = linear
    ctx = EvalContext(engine, x)
    gradient = run_metric_explained(ctx, "gradient")
    ixg = run_metric_explained(ctx, "input_x_gradient")
    for name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz"):
        np.testing.assert_allclose(run_metric(name, ctx, gradient)["per_image"], 0.0, atol=1e-6)
        assert min(run_metric(name, ctx, ixg)["per_image"]) > 0
    assert max(run_metric("local_lipschitz", ctx, ixg)["per_image"]) <= np.abs(weights).max() + 1e-5
    stability = run_metric("adversarial_stability", ctx, gradient)
    np.testing.assert_allclose(stability["per_image"], 1.0)
    assert len(stability["flipped"]) == len(x)


def run_metric_explained(ctx, method):
    from onnxlens.methods.registry import run_method

    return run_method(method, ctx.engine, ctx.x, 0)


def test_baselines_cannot_be_re_explained(linear):
    e = _explanation(np.ones((3, SIZE, SIZE)))
    with pytest.raises(MetricError, match="not a registered method"):
        run_metric("max_sensitivity", EvalContext(linear[0], linear[2]), e)
