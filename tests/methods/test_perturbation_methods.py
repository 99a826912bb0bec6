"""Black-box methods — occlusion, RISE, LIME: exact on a linear model, against Captum's
Occlusion, seeded and deterministic, on models with no backward rule, and on the shipped
models (from the API and the command line)."""

import numpy as np
import pytest

from builders import conv_classifier
from conftest import MODELS
from onnxlens import Explainer
from onnxlens.errors import UnsupportedOperatorError
from onnxlens.evaluation import evaluate
from onnxlens.methods import MethodError
from onnxlens.methods.perturbation import _rise_masks, segment, weighted_ridge
from onnxlens.methods.scoring import blurred

SHAPES = np.load(MODELS / "samples" / "shapes" / "test.npz")


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """Conv → GlobalAveragePool → Gemm with no activation: the logit is a·x + c exactly."""
    model = conv_classifier(size=12)
    next(n for n in model.graph.node if n.op_type == "Relu").op_type = "Identity"
    path = tmp_path_factory.mktemp("linear") / "linear.onnx"
    path.write_bytes(model.SerializeToString())
    explainer = Explainer(path, device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32)
    slope = explainer.explain(x, "gradient", target=[0, 2, 3], abs=False).attribution.astype(np.float64)
    return explainer, x, np.array([0, 2, 3]), slope


def test_occlusion_is_exact_on_a_linear_model(linear):
    explainer, x, target, slope = linear
    e = explainer.explain(x, "occlusion", target=target, window=4, stride=2, fill=0.5)
    contribution = (slope * (x - 0.5)).sum(axis=1)  # per pixel: what hiding it removes
    expected = np.zeros_like(contribution)
    counts = np.zeros(contribution.shape[1:])
    for r in range(0, 9, 2):
        for c in range(0, 9, 2):
            drop = contribution[:, r:r + 4, c:c + 4].sum(axis=(1, 2))
            expected[:, r:r + 4, c:c + 4] += drop[:, None, None]
            counts[r:r + 4, c:c + 4] += 1
    expected /= counts
    np.testing.assert_allclose(e.heatmap, expected, rtol=1e-4, atol=1e-4)
    assert np.array_equal(e.attribution[:, 0], e.attribution[:, 2])  # every channel carries the window's drop
    with pytest.raises(MethodError, match="window ≤ 12"):
        explainer.explain(x, "occlusion", window=13)


def test_lime_recovers_a_linear_model(linear):
    explainer, x, target, slope = linear
    e = explainer.explain(x, "lime", target=target, segments="grid", n_segments=9, fill="zero", alpha=0.0,
                          samples=200, score="logit")
    labels = e.diagnostics["segments"]
    assert labels.max() == 8 and np.allclose(e.diagnostics["surrogate_r2"], 1.0)
    per_pixel = (slope * x).sum(axis=1)
    for i in range(len(x)):
        want = [per_pixel[i][labels[i] == k].sum() for k in range(9)]
        np.testing.assert_allclose(e.diagnostics["segment_weights"][i], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.attribution.sum(axis=1), e.heatmap, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_rise_is_exact_on_a_linear_model(linear, fill):
    """RISE's map is Σ f(b + (x − b) ⊙ M)·M / (N·p): with f linear, f(b) + Σ slope·(x − b)·M."""
    explainer, x, target, slope = linear
    e = explainer.explain(x, "rise", target=target, masks=40, cells=3, p=0.4, fill=fill, seed=5, score="logit")
    masks = _rise_masks(np.random.default_rng(5), 40, 3, 0.4, (12, 12)).astype(np.float64)
    b = {"zero": np.zeros_like(x), "mean": np.broadcast_to(x.mean(axis=(2, 3), keepdims=True), x.shape),
         "blur": blurred(explainer.engine, x)}[fill]
    at_b = explainer.explain(np.ascontiguousarray(b), "gradient", target=target).score.astype(np.float64)
    scores = at_b[:, None] + np.einsum("nchw,khw->nk", slope * (x - b), masks)
    np.testing.assert_allclose(e.heatmap, np.einsum("nk,khw->nhw", scores, masks) / (40 * 0.4), rtol=1e-4, atol=1e-4)
    with pytest.raises(MethodError, match="fill must be one of zero, mean, blur, got 'gray'"):
        explainer.explain(x, "rise", fill="gray")


def test_weighted_ridge_matches_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(3)
    z, y, w = rng.integers(0, 2, (80, 6)).astype(float), rng.standard_normal(80), rng.random(80)
    coef, intercept, r2 = weighted_ridge(z, y, w, alpha=1.0)
    ridge = linear_model.Ridge(alpha=1.0).fit(z, y, sample_weight=w)
    np.testing.assert_allclose(coef, ridge.coef_, rtol=1e-8, atol=1e-10)
    assert intercept == pytest.approx(ridge.intercept_) and r2 == pytest.approx(ridge.score(z, y, sample_weight=w))


def test_segmentations():
    picture = np.zeros((20, 30, 3))
    picture[:, 15:] = 1.0
    grid = segment(picture, "grid", 6, 10.0)
    assert grid.shape == (20, 30) and set(np.unique(grid)) == set(range(4))
    slic = segment(picture, "slic", 2, 10.0)
    assert len(np.unique(slic[:, :15])) == 1 and len(np.unique(slic[:, 15:])) == 1 and slic[0, 0] != slic[0, -1]
    with pytest.raises(MethodError, match="segments must be one of slic, grid"):
        segment(picture, "voronoi", 6, 10.0)


@pytest.mark.parametrize("method, params", [("rise", {"masks": 300}), ("lime", {"samples": 300})])
def test_seeded_and_deterministic(shapes, method, params):
    x = SHAPES["x"][:2]
    first = shapes.explain(x, method, **params)
    assert np.array_equal(first.heatmap, shapes.explain(x, method, **params).heatmap)
    assert not np.allclose(first.heatmap, shapes.explain(x, method, seed=1, **params).heatmap)


def test_rise_and_lime_find_the_watermark_the_model_relies_on(shapes):
    """On watermarked squares the shapes model looks at the corner mark: the maximum of every
    RISE and LIME map lies on it (strict pointing game), as well as the best model-free map's."""
    marked = np.flatnonzero(SHAPES["has_watermark"])[:12]
    x, masks = SHAPES["x"][marked], SHAPES["watermark_masks"][marked]
    explanations = {m: shapes.explain(x, m, score="logit") for m in ("rise", "lime")}
    strict = {label: np.mean(r["per_image_strict"]) for label, r in
              evaluate(shapes, x, explanations, ["pointing_game"], masks=masks)["metrics"]["pointing_game"]["results"].items()}
    assert strict["rise"] == strict["lime"] == 1.0
    assert strict["rise"] >= max(v for k, v in strict.items() if k.startswith("baseline:"))


def test_rise_and_lime_point_at_the_object_better_than_model_free_maps(shapes):
    """On unmarked circles and triangles among distractors as contrasted as the object, the
    maximum of the RISE (mean fill, logits) and LIME maps lies on the object more often than
    any model-free map's — exactly on it, and within 4 px (the pointing game's 15 px at 224 px,
    scaled to 64 px)."""
    chosen = np.flatnonzero(~SHAPES["has_watermark"] & (SHAPES["y"] != 1))[:24]
    x, masks = SHAPES["x"][chosen], SHAPES["object_masks"][chosen]
    explanations = {"rise": shapes.explain(x, "rise", fill="mean", score="logit"),
                    "lime": shapes.explain(x, "lime")}
    results = evaluate(shapes, x, explanations, ["pointing_game"], masks=masks,
                       params={"pointing_game": {"tolerance": 4}})["metrics"]["pointing_game"]["results"]
    for key in ("per_image", "per_image_strict"):
        hits = {label: np.mean(r[key]) for label, r in results.items()}
        best_baseline = max(v for label, v in hits.items() if label.startswith("baseline:"))
        assert len(hits) == 6 and min(hits["rise"], hits["lime"]) > best_baseline + 0.1, (key, hits)


def test_forward_only_model(save):
    """A model with an op that has no backward rule: gradients refuse, perturbation works."""
    model = conv_classifier()
    next(n for n in model.graph.node if n.op_type == "Relu").op_type = "Asinh"
    explainer = Explainer(save(model), device="cpu")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(UnsupportedOperatorError, match="Asinh.*forward-only methods"):
        explainer.explain(x, "gradient")
    for method, params in (("occlusion", {"window": 3, "stride": 1}), ("rise", {"masks": 100}),
                           ("lime", {"samples": 100, "segments": "grid", "n_segments": 4})):
        e = explainer.explain(x, method, **params)
        assert e.heatmap.shape == (2, 8, 8) and np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0


@pytest.mark.parametrize("model", ["digits_cnn", "shapes_cnn"])
@pytest.mark.parametrize("method, params", [("occlusion", []), ("rise", ["--param", "masks=200"]),
                                            ("lime", ["--param", "samples=200"]),
                                            ("meaningful_perturbation", ["--param", "iterations=10"]),
                                            ("mc_dropout", ["--param", "samples=4", "--param", "base=occlusion"])])
def test_cli_on_every_shipped_model(model, method, params, tmp_path, cli):
    """Every black-box and wrapper method from the command line, on each model in models/."""
    sample = np.load(MODELS / "samples" / model.split("_")[0] / "test.npz")["x"][:1]
    np.save(tmp_path / "x.npy", sample)
    out = tmp_path / "e.npz"
    result = cli("explain", MODELS / f"{model}.onnx", "--input", tmp_path / "x.npy", "--method", method, *params,
                 "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert saved["heatmap"].shape == sample.shape[:1] + sample.shape[2:] and np.isfinite(saved["heatmap"]).all()


def test_cli_on_a_forward_only_model(save, tmp_path, cli):
    model = conv_classifier()
    next(n for n in model.graph.node if n.op_type == "Relu").op_type = "Asinh"
    np.save(tmp_path / "x.npy", np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32))
    failed = cli("explain", save(model), "--input", tmp_path / "x.npy", "--method", "gradient", "--out", tmp_path / "g.npz")
    assert failed.returncode == 1 and "forward-only methods" in failed.stderr
    result = cli("explain", save(model), "--input", tmp_path / "x.npy", "--method", "occlusion", "--param", "window=3",
                 "--out", tmp_path / "o.npz")
    assert result.returncode == 0, result.stderr


def test_occlusion_matches_captum(tmp_path):
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    from torch import nn

    from torch_models import export, prepared

    torch.manual_seed(0)
    layers, c = [], 3
    for width in (8, 16):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    net = prepared(nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 8 * 8, 5)))
    x = torch.rand(3, 3, 32, 32)
    export(net, x, tmp_path / "m.onnx")
    ours = Explainer(tmp_path / "m.onnx", device="cpu").explain(x.numpy(), "occlusion", target=[0, 3, 4],
                                                                window=8, stride=4, fill=0.25)
    with torch.no_grad():
        want = captum_attr.Occlusion(net.double()).attribute(
            x.double(), sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.25, target=[0, 3, 4]).numpy()
    assert np.linalg.norm(ours.attribution - want) / np.linalg.norm(want) < 1e-4


def test_audit_with_every_new_method(tmp_path):
    """The audit stores, evaluates and re-explains (robustness) each new method."""
    from onnxlens.pipelines import audit

    methods = [{"name": "occlusion", "params": {"window": 16, "stride": 16}}, {"name": "rise", "params": {"masks": 50}},
               {"name": "lime", "params": {"samples": 50, "segments": "grid", "n_segments": 16}},
               {"name": "meaningful_perturbation", "params": {"iterations": 5}},
               {"name": "mc_dropout", "params": {"samples": 2}}]
    results = audit.audit_directly({
        "model": str(MODELS / "shapes_cnn.onnx"), "methods": methods, "output": str(tmp_path / "run"),
        "dataset": {"path": str(MODELS / "samples" / "shapes" / "test.npz"), "limit": 4, "labels_key": "y"},
        "metrics": [{"name": "deletion", "params": {"steps": 5}}, "adversarial_stability"], "batch_size": 4,
        "baselines": False, "formats": ["html"]})
    stability = results["evaluation"]["metrics"]["adversarial_stability"]["results"]
    assert results["items"]["evaluated"] == 4 and set(stability) == {m["name"] for m in methods}
    assert all(r["mean"] is not None for r in stability.values())


@pytest.mark.parametrize("method, params", [("occlusion", {"window": 3}), ("rise", {"masks": 50}),
                                            ("lime", {"samples": 50}),
                                            ("meaningful_perturbation", {"iterations": 5, "mask_size": 4}),
                                            ("mc_dropout", {"samples": 2})])
def test_nhwc_models(save, method, params):
    """Channels-last inputs: maps per pixel, attributions laid out like the input."""
    explainer = Explainer(save(conv_classifier(layout="NHWC")), device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    e = explainer.explain(x, method, **params)
    assert e.heatmap.shape == (2, 8, 8) and e.attribution.shape == x.shape and np.isfinite(e.heatmap).all()
