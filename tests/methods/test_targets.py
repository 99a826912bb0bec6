"""Targets: the spec's forms and errors, and one output of a two-headed model explained as
that output alone would be."""

import numpy as np
import pytest
from onnx import helper

from builders import make_model, vi
from onnxlens import Explainer, Target, import_model
from onnxlens.errors import InvalidModelError
from onnxlens.methods.targets import TargetError


def _two_heads(outputs=("classes", "other")):
    """Conv → Relu → GlobalAveragePool → Flatten → two Gemm heads: 'classes' (4) and 'other' (3)."""
    rng = np.random.default_rng(7)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wa", "ba"], ["classes"], transB=1),
             helper.make_node("Gemm", ["f", "wb", "bb"], ["other"], transB=1)]
    heads = {"classes": vi("classes", ["N", 4]), "other": vi("other", ["N", 3])}
    return make_model(nodes, [vi("x", ["N", 3, 8, 8])], [heads[o] for o in outputs],
                      [("w", w(6, 3, 3, 3)), ("b", w(6)), ("wa", w(4, 6)), ("ba", w(4)), ("wb", w(3, 6)),
                       ("bb", w(3))])


def _explainer(outputs=("classes", "other")):
    return Explainer(import_model(_two_heads(outputs).SerializeToString()), device="cpu")


X = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("spec, want", [("2", Target(2)), (" class=1 ", Target(1)), ("output=other", Target(None, "other")),
                                        ("class=0,output=other", Target(0, "other")), ("-1", Target(-1))])
def test_spec_forms(spec, want):
    assert Target.parse(spec) == want


@pytest.mark.parametrize("spec, want", [
    ("class=1,box=0,2.5,8,9", Target(1, box=(0, 2.5, 8, 9))), ("region=m.png,predicted", Target(region="m.png", predicted=True)),
    ("step=3,class=2", Target(2, step=3)), ("sequence,output=probs", Target(output="probs", sequence=True)),
    ("class=2,box=7,objectness", Target(2, box=7, objectness=True)), ("class=1,match=0,0,4,4", Target(1, match=(0, 0, 4, 4))), ("box=0,0,4,4,predicted", Target(box=(0, 0, 4, 4), predicted=True))])
def test_kind_forms(spec, want):
    assert Target.parse(spec) == want
    assert Target.parse(spec).describe() in spec


@pytest.mark.parametrize("spec, message", [("regions=mask.png", "got 'regions=mask.png'"), ("", "is empty"),
                                           ("box=1,2,3", "box takes a box index I .a detector's. or four numbers"), ("step=x", "step must be an integer"),
                                           ("predicted=yes", "got 'predicted=yes'"),
                                           ("class=a", "class must be an integer"), ("class=1,class=2", "each once"),
                                           ("output", "got 'output'")])
def test_bad_specs_say_what_a_spec_takes(spec, message):
    with pytest.raises(TargetError, match=message):
        Target.parse(spec)


@pytest.mark.parametrize("method", ["gradient", "gradcam", "lrp", "occlusion", "integrated_gradients"])
def test_one_output_is_explained_as_if_it_were_the_only_one(method):
    params = {"steps": 8} if method == "integrated_gradients" else {}
    got = _explainer().explain(X, method, Target(output="other"), **params)
    want = _explainer(("other",)).explain(X, method, **params)
    np.testing.assert_array_equal(got.target, want.target)
    np.testing.assert_allclose(got.attribution, want.attribution, rtol=1e-5, atol=1e-7)
    assert got.params["output"] == "other"
    first = _explainer().explain(X, method, "class=1", **params)
    np.testing.assert_allclose(first.attribution, _explainer(("classes",)).explain(X, method, 1, **params).attribution,
                               rtol=1e-5, atol=1e-7)


def test_an_unknown_output_or_class_is_named():
    with pytest.raises(InvalidModelError, match="no output 'scores'; its outputs are 'classes', 'other'"):
        _explainer().explain(X, "gradient", "output=scores")
    with pytest.raises(Exception, match=r"class index in 0\.\.2"):
        _explainer().explain(X, "gradient", Target(3, "other"))


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_given_weights_explain_their_weighted_sum(method):
    """Resolved weights (as an explanation carries them) explain Σ w · score: one-hot weights
    give the classes, a weighted pair of classes the same sum of their maps (both methods are
    linear in the target)."""
    explainer = _explainer(("classes",))
    classes = [1, 2, 1]
    params = {"abs": False} if method == "gradient" else {"score": "logit"}
    got = explainer.explain(X, method, Target(classes, weights=np.eye(4, dtype=np.float32)[classes]), **params)
    np.testing.assert_allclose(got.attribution, explainer.explain(X, method, classes, **params).attribution,
                               rtol=1e-5, atol=1e-7)
    assert got.target.tolist() == classes and got.weights is not None
    pair = np.tile(np.array([[0.0, 2.0, -1.0, 0.0]], np.float32), (3, 1))
    want = 2 * explainer.explain(X, method, 1, **params).attribution - explainer.explain(X, method, 2, **params).attribution
    got = explainer.explain(X, method, Target(weights=pair), **params)
    np.testing.assert_allclose(got.attribution, want, rtol=1e-4, atol=1e-6)
    assert got.target.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("target, message", [
    (Target(weights=np.ones((2, 4))), r"one weight tensor for each of the 3 input row"),
    (Target(weights=np.ones((3, 4)), step=1), "give them with a class only, not step=1"),
    (Target(weights=np.ones((3, 5))), r"do not fit the score tensor"),
])
def test_given_weights_that_do_not_fit_are_named(target, message):
    with pytest.raises(Exception, match=message):
        _explainer(("classes",)).explain(X, "gradient", target)


def test_cli_target_spec(tmp_path, cli, save):
    path = save(_two_heads())
    np.save(tmp_path / "x.npy", X[:1])
    run = cli("explain", path, "--input", tmp_path / "x.npy", "--target", "output=other,class=2", "--out",
              tmp_path / "e.npz")
    assert run.returncode == 0, run.stderr
    assert "gradient: output other class [2]" in run.stdout, run.stdout
    assert np.load(tmp_path / "e.npz")["target"].tolist() == [2]
    bad = cli("explain", path, "--input", tmp_path / "x.npy", "--target", "box=3", "--out", tmp_path / "e.npz")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "box=3 picks a box of a detector's output [N, boxes, features]; output 'classes' is [N, 4]" in bad.stderr
    bad = cli("explain", path, "--input", tmp_path / "x.npy", "--target", "class=1,region=m.png", "--out",
              tmp_path / "e.npz")
    assert bad.returncode != 0 and "a class-score vector: region applies to dense outputs" in bad.stderr, bad.stderr


def _segmenter():
    """Conv (no bias) → Relu → Resize ×2 (linear): a dense [N, 3, 8, 8] map from a 4×4 grid."""
    w = np.random.default_rng(3).standard_normal((3, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="linear")]
    return make_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", ["N", 3, 8, 8])],
                      [("w", w), ("scales", np.array([1, 1, 2, 2], np.float32))])


def test_lrp_conserves_a_region_of_an_upsampled_map():
    explainer = Explainer(import_model(_segmenter().SerializeToString()), device="cpu")
    mask = np.zeros((8, 8), bool)
    mask[1:5, 2:7] = True
    e = explainer.explain(X, "lrp", Target(1, region=mask), preset="epsilon", epsilon=1e-9)
    y = explainer.engine.forward(X)["y"]
    np.testing.assert_allclose(e.score, (y[:, 1] * mask).sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(e.diagnostics["relevance_ratio"], 1.0, atol=1e-4)
    assert not e.warnings


def test_inspect_names_each_outputs_target_kinds(cli, save):
    import json

    run = cli("inspect", save(_segmenter()), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"][0]["targets"] == {
        "kind": "dense map", "specs": "class=K with region=MASK, box=x0,y0,x1,y1, predicted",
        "default": "the whole map, the class of the largest sum"}
    run = cli("inspect", save(_two_heads()))
    assert run.returncode == 0 and "class scores: class=K" in run.stdout, run.stderr
