"""Metrics score the explanation's own target: a region of a dense map scores as the class of
the class-score vector it holds, and metrics that re-explain for a class refuse it."""

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


def test_metrics_that_re_explain_for_a_class_refuse_a_region(models):
    x, _, dense = models
    e = dense.explain(x, "gradient", "class=2,box=0,0,32,32")
    with pytest.raises(MetricError, match="re-explains for classes of a class-score vector; the explanation's "
                                          "target is 'box=0,0,32,32'"):
        evaluate(dense.engine, x, [e], ["max_sensitivity"], baselines=[])
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
    bad = cli("evaluate", path, "--input", tmp_path / "x.npy", "--metric", "max_sensitivity", "--target",
              "class=3,box=0,0,32,32", "--no-baselines", "--out", tmp_path / "r.json")
    assert bad.returncode != 0 and "re-explains for classes" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
