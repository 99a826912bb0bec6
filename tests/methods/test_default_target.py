"""The default target of a class-score vector — each row's predicted class — is chosen inside
the method's own backward run (ArgMax → OneHot in the graph): the same maps as with the classes
given, and no forward pass before it."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.methods import METHODS
from onnxlens.runtime.engine import Engine

X = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:5]
SINGLE_PASS = sorted(name for name, info in METHODS.items() if info.predicts)


def test_the_single_pass_methods_are_flagged():
    assert {"gradient", "input_x_gradient", "guided_backprop", "deconvnet", "gradcam", "gradcam_plus_plus",
            "layercam", "eigengradcam", "guided_gradcam", "cam", "lrp", "deep_taylor", "legrad"} == set(SINGLE_PASS)


@pytest.mark.parametrize("method", [m for m in SINGLE_PASS if m != "legrad"])  # legrad: transformers only
def test_in_graph_default_equals_the_classes_given(digits, method, monkeypatch):
    predicted = digits.engine.forward(X)[digits.engine.score_name()].argmax(axis=1)
    want = digits.explain(X, method, predicted)

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran before the backward run")

    monkeypatch.setattr(Engine, "forward", no_forward)
    got = digits.explain(X, method)
    assert got.target.tolist() == predicted.tolist() and got.target.dtype == np.int64
    np.testing.assert_array_equal(got.attribution, want.attribution)
    np.testing.assert_array_equal(got.score, want.score)


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_in_graph_default_on_a_fixed_batch_model_in_its_own_precision(score):
    """The shipped shapes model in float16 (as onnxconverter-common converts it), run in its own
    precision, its batch fixed at 2 (the last chunk of 5 rows padded)."""
    import onnx

    float16 = pytest.importorskip("onnxconverter_common.float16")
    model = onnx.load(MODELS / "shapes_cnn.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    half = Explainer(float16.convert_float_to_float16(model).SerializeToString(), device="cpu")
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:5].astype(np.float16)
    engine = half.engine
    predicted = engine.forward(x)[engine.score_name(score)].argmax(axis=1)
    got = half.explain(x, "gradient", precision="model", score=score)
    want = half.explain(x, "gradient", predicted, precision="model", score=score)
    assert got.target.tolist() == predicted.tolist() and len(got.target) == 5
    np.testing.assert_array_equal(got.attribution, want.attribution)
