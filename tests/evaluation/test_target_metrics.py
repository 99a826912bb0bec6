"""Metrics score the explanation's own target: a region of a dense map scores, and re-explains,
as the class of the class-score vector it holds; metrics that attack or draw another class of a
class-score vector refuse it."""

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import MODELS
from onnxlens import Explainer, Explanation, Target, import_model
from onnxlens.evaluation import MetricError, evaluate

FAITHFULNESS = ["deletion", "insertion", "pixel_flipping", "faithfulness_correlation", "road"]


def _as_dense_map(path):
    """The model with its [N, C] logits laid out as a 1×1 dense map [N, C, 1, 1]."""
    model = onnx.load(path)
    graph = model.graph
    logits = graph.output[0].name
    axes = helper.make_tensor("axes", onnx.TensorProto.INT64, [2], [2, 3])
    graph.initializer.append(axes)
    graph.node.append(helper.make_node("Unsqueeze", [logits, "axes"], ["map"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("map", onnx.TensorProto.FLOAT, ["N", 10, 1, 1]))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def models():
    x = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:4].astype(np.float32)
    plain = Explainer(MODELS / "digits_cnn.onnx", device="cpu")
    dense = Explainer(import_model(_as_dense_map(MODELS / "digits_cnn.onnx")), device="cpu")
    return x, plain, dense


def test_a_whole_map_region_scores_as_its_class(models):
    x, plain, dense = models
    want = evaluate(plain.engine, x, ["gradient"], FAITHFULNESS, target=3, baselines=["spectral_residual"])
    got = evaluate(dense.engine, x, ["gradient"], FAITHFULNESS, target="class=3,box=0,0,32,32",
                   baselines=["spectral_residual"])
    assert got["explanations"]["gradient"]["params"]["target"] == "box=0,0,32,32"
    for name in FAITHFULNESS:
        for label, result in want["metrics"][name]["results"].items():
            np.testing.assert_allclose(got["metrics"][name]["results"][label]["per_image"], result["per_image"],
                                       rtol=1e-4, atol=1e-6, err_msg=f"{name} · {label}")


def test_the_weights_travel_with_the_explanation(models, tmp_path):
    x, _, dense = models
    e = dense.explain(x, "gradient", Target(2, region=np.ones((1, 1))))
    e.save_npz(tmp_path / "e.npz")
    again = Explanation.from_arrays(np.load(tmp_path / "e.npz"))
    np.testing.assert_array_equal(again.weights, e.weights)
    np.testing.assert_array_equal(again.take([1, 3]).weights, e.weights[[1, 3]])
    np.testing.assert_array_equal(Explanation.concatenate([e.take([0]), e.take([1, 2, 3])]).weights, e.weights)


REEXPLAINING = {"max_sensitivity": {"samples": 3}, "avg_sensitivity": {"samples": 3}, "local_lipschitz": {"samples": 3},
                "model_randomization": {"max_layers": 2}}


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_re_explaining_metrics_keep_a_regions_weights(models, method):
    """Robustness and randomization re-explain for the explanation's own weights: on a whole
    1×1 map they give what the plain model's class gives."""
    x, plain, dense = models
    params = {"occlusion": {"window": 8, "stride": 8}}.get(method, {})
    metrics = REEXPLAINING
    want = evaluate(plain.engine, x, [plain.explain(x, method, 3, **params)], list(metrics), baselines=[],
                    params=metrics)
    got = evaluate(dense.engine, x, [dense.explain(x, method, "class=3,box=0,0,32,32", **params)], list(metrics),
                   baselines=[], params=metrics)
    for name in metrics:
        np.testing.assert_allclose(got["metrics"][name]["results"][method]["per_image"],
                                   want["metrics"][name]["results"][method]["per_image"], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("metric", ["random_logit", "adversarial_stability"])
def test_metrics_of_another_class_or_an_attack_refuse_a_region(models, metric):
    x, _, dense = models
    e = dense.explain(x, "gradient", "class=2,box=0,0,32,32")
    with pytest.raises(MetricError, match="works on a class of a class-score vector; the explanation's "
                                          "target is 'box=0,0,32,32'"):
        evaluate(dense.engine, x, [e], [metric], baselines=[])


def test_metrics_need_the_weights_of_a_region(models):
    x, _, dense = models
    e = dense.explain(x, "gradient", "class=2,box=0,0,32,32")
    e.weights = None
    with pytest.raises(MetricError, match="needs the weights of the explanation's target 'box=0,0,32,32'"):
        evaluate(dense.engine, x, [e], ["deletion"], baselines=[])


def test_cli_evaluates_a_region_target(models, tmp_path, cli, save):
    import json

    x, _, _ = models
    np.save(tmp_path / "x.npy", x[:2])
    path = save(_as_dense_map(MODELS / "digits_cnn.onnx"))
    run = cli("evaluate", path, "--input", tmp_path / "x.npy", "--method", "gradient", "--metric", "deletion",
              "--target", "class=3,box=0,0,32,32", "--no-baselines", "--out", tmp_path / "r.json")
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["targets"]["gradient"] == [3, 3] and len(result["metrics"]["deletion"]["results"]["gradient"]["per_image"]) == 2
    bad = cli("evaluate", path, "--input", tmp_path / "x.npy", "--metric", "random_logit", "--target",
              "class=3,box=0,0,32,32", "--no-baselines", "--out", tmp_path / "r.json")
    assert bad.returncode != 0 and "works on a class of a class-score" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
