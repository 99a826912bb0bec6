"""The canonical form: one signature per op, weights as initializers, same numbers."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from builders import conv_classifier, f32, make_model, opset11_zoo, vi
from onnxlens import errors, import_model
from onnxlens.graph_ops import CANONICAL_OPSET, canonicalize, default_opset
from onnxlens.graph_ops.tensors import node_attr


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_opset11_ops_rewritten_to_canonical_signatures():
    canonical = canonicalize(opset11_zoo()).model
    assert default_opset(canonical) == CANONICAL_OPSET
    for node in canonical.graph.node:
        if node.op_type in ("Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax"):
            assert node_attr(node, "axes") is None and len(node.input) == 2, node.name
        if node.op_type == "Split":
            assert node_attr(node, "split") is None
            assert len(node.input) == 2 or node_attr(node, "num_outputs") == 2
        if node.op_type == "Dropout":
            assert node_attr(node, "ratio") is None and len(node.input) == 2
        if node.op_type == "Softmax":
            assert node_attr(node, "axis") == -1
    # Softmax over C×H×W (opset 11 semantics) became Flatten → Softmax → Reshape
    assert {"Flatten", "Reshape"} <= {n.op_type for n in canonical.graph.node}


def test_opset11_zoo_computes_the_same_after_canonicalization():
    original = opset11_zoo()
    x = f32(1, 3, 5, 5)
    want = _run(original, x)
    got = _run(canonicalize(original).model, x)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_import_verifies_canonical_form_by_running():
    imported = import_model(opset11_zoo().SerializeToString())
    assert "matches the original" in imported.verification
    assert any("opset 11 → 18" in note for note in imported.canonical_notes)


@pytest.mark.parametrize("as_nodes", [False, True], ids=["initializers", "constant-nodes"])
def test_weights_in_constant_nodes_become_initializers(as_nodes):
    model = conv_classifier(constants_as_nodes=as_nodes)
    canonical = canonicalize(model).model
    assert not [n for n in canonical.graph.node if n.op_type == "Constant"]
    assert {t.name for t in canonical.graph.initializer} >= {"w", "b", "fc_w", "fc_b"}


def test_constant_node_weights_describe_like_initializers():
    a = import_model(conv_classifier(constants_as_nodes=False).SerializeToString()).describe()
    b = import_model(conv_classifier(constants_as_nodes=True).SerializeToString()).describe()
    assert a["parameter_count"] == b["parameter_count"] == 6 * 3 * 9 + 6 + 4 * 6 + 4
    assert b["op_histogram"]["Constant"] == 4


def test_initializers_listed_as_inputs_are_not_model_inputs():
    model = conv_classifier()
    for t in model.graph.initializer:
        model.graph.input.append(vi(t.name, list(t.dims)))
    imported = import_model(model.SerializeToString())
    assert [i["name"] for i in imported.describe()["inputs"]] == ["x"]


def _maxpool_ceil_model(opset):
    # 4 wide, kernel 2, stride 3, pad 1, ceil_mode: the last window would start in the padding,
    # so it is dropped (2 outputs, as PyTorch and ONNX Runtime compute); ONNX's shape inference
    # before opset 22 says 3.
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[3, 3],
                              pads=[1, 1, 1, 1], ceil_mode=1)]
    return make_model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", 4)], opset=opset)


def test_maxpool_ceil_mode_shape_is_measured_not_trusted():
    imported = import_model(_maxpool_ceil_model(13).SerializeToString())
    out = imported.describe()["outputs"][0]
    assert out["shape"] == [1, 2, 2, 2]
    assert imported.shape_fixes, "the wrong inferred shape should be reported"


def test_dynamic_batch_stays_symbolic():
    imported = import_model(conv_classifier().SerializeToString())
    assert imported.describe()["outputs"][0]["shape"] == ["N", 4]
    shapes = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in imported.model.graph.value_info}
    assert shapes["c"] == ["N", 6, 8, 8]


def test_local_functions_are_inlined():
    fn = helper.make_function("custom", "DoubleRelu", ["a"], ["b"],
                              [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Add", ["r", "r"], ["b"])],
                              opset_imports=[helper.make_opsetid("", 18)])
    nodes = [helper.make_node("DoubleRelu", ["x"], ["y"], domain="custom")]
    model = make_model(nodes, [vi("x", [1, 1, 4, 4])], [vi("y", [1, 1, 4, 4])], opset=18)
    model.opset_import.append(helper.make_opsetid("custom", 1))
    model.functions.append(fn)
    imported = import_model(model.SerializeToString())
    assert {n.op_type for n in imported.model.graph.node} == {"Relu", "Add"}


def test_resize_tf_half_pixel_for_nn_is_refused():
    nodes = [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                              coordinate_transformation_mode="tf_half_pixel_for_nn")]
    model = make_model(nodes, [vi("x", [1, 1, 4, 4])], [vi("y", 4)],
                       [("roi", np.zeros(0, np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))], opset=11)
    with pytest.raises(errors.CanonicalizationError, match="tf_half_pixel_for_nn"):
        import_model(model.SerializeToString())


def test_training_mode_batchnorm_is_refused():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"])]
    weights = [(k, np.ones(2, np.float32)) for k in "sbmv"]
    model = make_model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", 4)], weights, opset=11)
    with pytest.raises(errors.CanonicalizationError, match="training-mode"):
        canonicalize(model)


def test_canonical_model_passes_the_checker():
    onnx.checker.check_model(canonicalize(opset11_zoo()).model, full_check=True)


def test_model_that_onnxruntime_cannot_load_is_a_runtime_error():
    # valid for the checker, but a Squeeze of a size-8 axis fails in ONNX Runtime
    nodes = [helper.make_node("Squeeze", ["x", "axes"], ["y"])]
    model = make_model(nodes, [vi("x", [1, 8, 4, 4])], [vi("y", 3)], [("axes", np.array([1]))], opset=18)
    with pytest.raises(errors.RuntimeFailure, match="ONNX Runtime cannot load the model"):
        import_model(model.SerializeToString())


def test_graph_index_reads_the_wiring():
    from onnxlens.graph_ops.index import graph_index

    graph = conv_classifier().graph
    index = graph_index(graph)
    first = graph.node[0]
    assert index.producer(first.output[0]) is first and index.producer(graph.input[0].name) is None
    assert all(first.output[0] in n.input for n in index.consumers_of(first.output[0]))
    square = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "g", [vi("x", [1])], [vi("y", [1])])
    assert len(graph_index(square).consumers_of("x")) == 1  # read twice, consumed once


def test_nodes_out_of_topological_order_are_sorted_on_import(tmp_path):
    from onnxlens import Explainer
    from onnxlens.graph_ops.index import in_topological_order, is_topological

    model = conv_classifier()
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(model)
    nodes = list(shuffled.graph.node)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes[::-1])
    assert is_topological(model.graph) and not is_topological(shuffled.graph)
    assert in_topological_order(model) == (model, False)
    fixed, moved = in_topological_order(shuffled)
    assert moved and is_topological(fixed.graph) and sorted(n.name for n in fixed.graph.node) == sorted(
        n.name for n in model.graph.node)
    onnx.save(shuffled, tmp_path / "shuffled.onnx")
    onnx.save(model, tmp_path / "sorted.onnx")
    imported = import_model(tmp_path / "shuffled.onnx")
    assert "sorted the nodes into topological order" in imported.canonical_notes
    x = np.random.default_rng(0).standard_normal((2, *imported.spec.image_input.shape[1:])).astype(np.float32)
    np.testing.assert_allclose(Explainer(tmp_path / "shuffled.onnx").explain(x, "gradient").attribution,
                               Explainer(tmp_path / "sorted.onnx").explain(x, "gradient").attribution, rtol=1e-6)


def test_a_cycle_is_left_to_the_checker_to_name(tmp_path):
    from onnxlens.graph_ops.index import in_topological_order

    nodes = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["x", "b"], ["y"])]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 3, 8, 8])], [], opset=17)
    assert in_topological_order(model) == (model, False)
    onnx.save(model, tmp_path / "cycle.onnx")
    with pytest.raises(errors.InvalidModelError, match="fails the ONNX checker"):
        import_model(tmp_path / "cycle.onnx")
