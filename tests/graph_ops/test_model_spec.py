"""Input layout, trailing activation and output selection."""

import numpy as np
import pytest
from onnx import helper

from builders import conv_classifier, f32, make_model, vi
from onnxlens import errors, import_model
from onnxlens.graph_ops import model_spec


@pytest.mark.parametrize(
    "layout, channels, expected, evidence",
    [
        ("NCHW", 3, "NCHW", "first Conv"),
        ("NHWC", 3, "NHWC", "Transpose"),
        ("NHWC-reshape", 1, "NHWC", "Reshape"),
    ],
)
def test_layout_detection(layout, channels, expected, evidence):
    spec = import_model(conv_classifier(layout, channels=channels).SerializeToString()).spec.image_input
    assert spec.layout == expected and evidence in spec.layout_evidence
    assert spec.channels == channels and spec.spatial == (8, 8)


def test_nhwc_behind_normalization_is_detected():
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["normed"]),
        helper.make_node("Transpose", ["normed"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["y"]),
    ]
    weights = [("mean", f32(1, 1, 1, 3)), ("std", np.ones((1, 1, 1, 3), np.float32)), ("w", f32(2, 3, 3, 3))]
    model = make_model(nodes, [vi("x", [1, 16, 16, 3])], [vi("y", 4)], weights)
    assert import_model(model.SerializeToString()).spec.image_input.layout == "NHWC"


def test_layout_from_shape_when_no_conv():
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)]
    model = make_model(nodes, [vi("x", [1, 32, 32, 3])], [vi("y", 2)], [("axes", np.array([1, 2]))], opset=18)
    spec = import_model(model.SerializeToString()).spec.image_input
    assert spec.layout == "NHWC" and "last axis" in spec.layout_evidence


def test_layout_override():
    spec = import_model(conv_classifier().SerializeToString(), layout="NHWC").spec.image_input
    assert spec.layout == "NHWC" and spec.layout_evidence == "given by the user"
    with pytest.raises(errors.InvalidModelError, match="layout must be one of"):
        import_model(conv_classifier().SerializeToString(), layout="CHWN")


@pytest.mark.parametrize("activation", ["Softmax", "LogSoftmax", "Sigmoid"])
def test_trailing_activation_detected_through_shape_ops(activation):
    model = conv_classifier()
    graph = model.graph
    graph.node.append(helper.make_node(activation, ["logits"], ["act"], name="act"))
    graph.node.append(helper.make_node("Identity", ["act"], ["probs"], name="id"))
    del graph.output[:]
    graph.output.append(vi("probs", 2))
    out = import_model(model.SerializeToString()).spec.output()
    assert out.activation == activation and out.logits == "logits"


def test_no_trailing_activation():
    assert import_model(conv_classifier().SerializeToString()).spec.output().activation is None


def test_several_outputs_are_listed_and_selectable():
    model = conv_classifier(softmax=True)
    model.graph.output.append(vi("g", 4))
    spec = import_model(model.SerializeToString()).spec
    assert [o.name for o in spec.outputs] == ["probs", "g"]
    assert spec.output("g").shape == ("N", 6, 1, 1)
    assert spec.output().activation == "Softmax"
    with pytest.raises(errors.InvalidModelError, match="no output 'nope'"):
        spec.output("nope")


def test_second_non_image_input_is_listed():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "gain"], ["y"])]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8]), vi("gain", [1])], [vi("y", 4)], [("w", f32(2, 3, 3, 3))])
    spec = model_spec(model)
    assert spec.image_input.name == "x" and [t.name for t in spec.other_inputs] == ["gain"]
