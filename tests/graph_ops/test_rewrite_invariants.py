"""No graph rewrite drops or renames a tensor that a graph output or a later node names: checked
over every rewrite, on graphs whose outputs sit where exporters put them (a logit read by an
Identity before the Softmax, a MatMul + Add head, BatchNorm after a convolution, a second output
inside the network)."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from builders import i64, make_model, vi
from onnxlens.graph_ops.backward import prepare_for_differentiation
from onnxlens.graph_ops.canonical import canonicalize
from onnxlens.graph_ops.fold_constants import fold_shape_computations
from onnxlens.graph_ops.precision import float32_twin
from onnxlens.graph_ops.qoperator import qoperator_to_qdq
from onnxlens.graph_ops.simplify import drop_noops, fold_batchnorm, fold_dequantized_constants, fuse_matmul_add
from onnxlens.runtime.model_import import record_shapes

REWRITES = {
    "canonicalize": lambda m: canonicalize(m).model,
    "drop_noops": lambda m: drop_noops(m)[0],
    "fold_batchnorm": lambda m: fold_batchnorm(m)[0],
    "fuse_matmul_add": lambda m: fuse_matmul_add(m)[0],
    "fold_dequantized_constants": lambda m: fold_dequantized_constants(m)[0],
    "qoperator_to_qdq": lambda m: qoperator_to_qdq(m)[0],
    "float32_twin": float32_twin,
    "fold_shape_computations": lambda m: fold_shape_computations(canonicalize(m).model)[0],
    "prepare_for_differentiation": prepare_for_differentiation,
}
#: tensors of the head a graph may also return (besides the final probabilities)
INNER = ["bn", "relu", "flat", "fc_out", "logits", "logits_id"]


def _paddle_style_head(outputs):
    """Conv → BatchNorm → Relu → GlobalAveragePool → Reshape (shape computed from Shape) →
    MatMul → Add → Identity → Softmax, returning ``probs`` and the tensors in ``outputs``."""
    rng = np.random.default_rng(0)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["conv", "g", "beta", "mean", "var"], ["bn"], name="bn"),
        n("Relu", ["bn"], ["relu"], name="relu"),
        n("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        n("Shape", ["gap"], ["gap_shape"], name="shape"),
        n("Gather", ["gap_shape", "zero"], ["rows"], name="rows", axis=0),
        n("Unsqueeze", ["rows", "zero_axes"], ["rows1"], name="rows1"),
        n("Concat", ["rows1", "minus_one"], ["flat_shape"], name="flat_shape", axis=0),
        n("Reshape", ["gap", "flat_shape"], ["flat"], name="flatten"),
        n("MatMul", ["flat", "fc_w"], ["fc_out"], name="fc"),
        n("Add", ["fc_out", "fc_b"], ["logits"], name="fc_bias"),
        n("Identity", ["logits"], ["logits_id"], name="identity"),
        n("Softmax", ["logits_id"], ["probs"], name="softmax", axis=1),
    ]
    weights = [("w", w(4, 3, 3, 3)), ("g", w(4)), ("beta", w(4)), ("mean", w(4)),
               ("var", np.abs(w(4)) + 0.5), ("zero", i64(0)), ("zero_axes", i64([0])), ("minus_one", i64([-1])),
               ("fc_w", w(4, 3)), ("fc_b", w(3))]
    declared = [vi("probs", ["N", 3])] + [vi(name, 2 if name not in ("bn", "relu") else 4) for name in outputs]
    return make_model(nodes, [vi("x", ["N", 3, 6, 6])], declared, weights, opset=13)


def _named_but_missing(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    present = ({i.name for i in graph.input} | {t.name for t in graph.initializer}
               | {o for node in graph.node for o in node.output if o})
    named = {o.name for o in graph.output} | {i for node in graph.node for i in node.input if i}
    return named - present


@pytest.mark.parametrize("outputs", [(), *itertools.combinations(INNER, 1), ("fc_out", "logits_id"),
                                     ("bn", "logits")], ids=lambda o: "+".join(o) or "probs")
@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_rewrite_keeps_every_named_tensor_and_every_output_value(rewrite, outputs):
    model = canonicalize(_paddle_style_head(outputs)).model
    x = np.random.default_rng(1).random((2, 3, 6, 6), dtype=np.float32)
    if rewrite == "fold_shape_computations":  # needs measured shapes, as at import
        model = record_shapes(model, {"gap": ("N", 4, 1, 1)})[0]
    rewritten = REWRITES[rewrite](model)
    assert not _named_but_missing(rewritten)
    assert [o.name for o in rewritten.graph.output] == [o.name for o in model.graph.output]
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("outputs", [(), ("logits",), ("logits_id",), ("fc_out", "logits_id")],
                         ids=lambda o: "+".join(o) or "probs")
def test_every_method_family_loads_whatever_the_graph_returns(outputs, save):
    from onnxlens import Explainer

    explainer = Explainer(save(_paddle_style_head(outputs)), device="cpu")
    x = np.random.default_rng(2).random((2, 3, 6, 6), dtype=np.float32)
    for method, params in (("gradient", {}), ("gradcam", {}), ("lrp", {}), ("occlusion", {"window": 3})):
        assert np.isfinite(explainer.explain(x, method, **params).heatmap).all()
