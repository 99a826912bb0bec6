"""MC dropout by graph surgery: rate 0 reproduces the deterministic maps exactly, the model's
own Dropout nodes are re-enabled, the predictive statistics, conservative maps, the CLI."""

import numpy as np
import pytest
from onnx import helper

from builders import conv_classifier
from conftest import MODELS
from onnxlens import Explainer
from onnxlens.errors import InputShapeError
from onnxlens.methods.uncertainty import DropoutEngine, explain_under_dropout, predictive

DIGITS = np.load(MODELS / "samples" / "digits" / "test.npz")


@pytest.mark.parametrize("method", ["gradient", "gradcam", "lrp", "occlusion"])
def test_rate_zero_reproduces_the_deterministic_map(digits, method):
    x = DIGITS["x"][:4]
    layer = digits.engine.layers()[-1][0]
    e = explain_under_dropout(digits.engine, x, method, samples=3, before=(layer,), rate=0.0)
    assert np.array_equal(e.heatmap, digits.explain(x, method).heatmap)
    assert np.array_equal(e.diagnostics["heatmap_std"], np.zeros_like(e.heatmap))


def test_dropout_spreads_maps_and_predictions(digits):
    x = DIGITS["x"][:6]
    layer = digits.engine.layers()[-1][0]
    e = explain_under_dropout(digits.engine, x, "gradient", samples=16, before=(layer,), rate=0.3, seed=3)
    again = explain_under_dropout(digits.engine, x, "gradient", samples=16, before=(layer,), rate=0.3, seed=3)
    assert np.array_equal(e.heatmap, again.heatmap)  # seeded
    assert e.diagnostics["heatmap_std"].mean() > 0
    mi, h = e.diagnostics["mutual_information"], e.diagnostics["entropy"]
    assert (mi >= -1e-12).all() and (mi <= h + 1e-12).all() and np.allclose(e.diagnostics["predictive_mean"].sum(1), 1)
    conservative = explain_under_dropout(digits.engine, x, "gradient", samples=16, before=(layer,), rate=0.3, seed=3,
                                         conservative=True)
    np.testing.assert_allclose(conservative.heatmap, e.heatmap * (1 - e.diagnostics["uncertainty"])[:, None, None])


def test_the_models_own_dropout_is_re_enabled(save):
    model = conv_classifier(classes=4)
    nodes = list(model.graph.node)
    fc = next(n for n in nodes if n.op_type == "Gemm")
    fc.input[0] = "f_dropped"
    ratio = helper.make_tensor("ratio", 1, [], [0.5])
    model.graph.initializer.append(ratio)
    flatten = next(i for i, n in enumerate(nodes) if n.op_type == "Flatten")
    model.graph.node.insert(flatten + 1, helper.make_node("Dropout", ["f", "ratio"], ["f_dropped"], name="drop"))
    explainer = Explainer(save(model), device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    engine = DropoutEngine(explainer.engine, seed=0)
    assert [(s.tensor, s.rate, s.shape) for s in engine.sites] == [("f", 0.5, (6,))]
    stats = predictive(engine, x, samples=32)
    assert stats["probabilities"].std(axis=1).mean() > 0.01 and (stats["mutual_information"] > 0).all()
    still = predictive(DropoutEngine(explainer.engine, rate=0.0), x, samples=4)["probabilities"]
    np.testing.assert_allclose(still, np.repeat(still[:, :1], 4, axis=1))
    with pytest.raises(InputShapeError, match="no Dropout node"):
        DropoutEngine(Explainer(MODELS / "digits_cnn.onnx", device="cpu").engine)
    with pytest.raises(InputShapeError, match="no tensor 'nope'"):
        DropoutEngine(explainer.engine, before=("nope",))


def test_cli(tmp_path, cli):
    np.save(tmp_path / "x.npy", DIGITS["x"][:2])
    result = cli("explain", MODELS / "digits_cnn.onnx", "--input", tmp_path / "x.npy", "--method", "mc_dropout",
                 "--param", "base=gradcam", "--param", "rate=0.2", "--param", "samples=8", "--out", tmp_path / "e.npz")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "e.npz") as saved:
        assert saved["heatmap"].shape == (2, 32, 32) and np.isfinite(saved["heatmap"]).all()
        assert saved["diagnostics/heatmap_std"].shape == (2, 32, 32) and saved["diagnostics/heatmap_std"].max() > 0
        assert saved["diagnostics/mutual_information"].shape == (2,)
