"""Small ONNX models built with onnx.helper for the tests (no torch needed)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(1234)


def f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def make_model(nodes, inputs, outputs, weights=(), opset=13, ir_version=8, constants_as_nodes=False, **kw):
    """A model from nodes; ``weights`` is a list of (name, array), stored as initializers or
    as Constant nodes."""
    inits, consts = [], []
    for name, array in weights:
        tensor = numpy_helper.from_array(array, name)
        if constants_as_nodes:
            consts.append(helper.make_node("Constant", [], [name], name=f"const_{name}", value=tensor))
        else:
            inits.append(tensor)
    graph = helper.make_graph(consts + list(nodes), "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version, **kw)


def vi(name, shape, elem=TensorProto.FLOAT):
    """A value info; an int ``shape`` gives that rank with unknown dims."""
    if isinstance(shape, int):
        shape = [None] * shape
    return helper.make_tensor_value_info(name, elem, shape)


def conv_classifier(layout="NCHW", constants_as_nodes=False, channels=3, size=8, classes=4, opset=13,
                    softmax=False, seed=0, head="gemm"):
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm (→ Softmax), weights drawn from ``seed``, with
    the given input layout (``head="matmul"``: the dense layer as MatMul + Add, as TensorFlow writes it):
    NCHW, NHWC (Transpose after the input), NHWC-reshape (a Reshape moves a 1-channel last axis)."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    nodes, weights = [], [("w", w(6, channels, 3, 3)), ("b", w(6)), ("fc_w", w(classes, 6)), ("fc_b", w(classes))]
    if layout == "NCHW":
        shape, first = ["N", channels, size, size], "x"
    elif layout == "NHWC":
        shape, first = ["N", size, size, channels], "x_nchw"
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
    elif layout == "NHWC-reshape":
        assert channels == 1
        shape, first = [1, size, size, 1], "x_nchw"
        weights.append(("new_shape", i64([1, 1, size, size])))
        nodes.append(helper.make_node("Reshape", ["x", "new_shape"], ["x_nchw"], name="to_nchw"))
    else:
        raise ValueError(layout)
    nodes += [
        helper.make_node("Conv", [first, "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
    ]
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    else:
        weights[2] = ("fc_w", np.ascontiguousarray(weights[2][1].T))
        nodes += [helper.make_node("MatMul", ["f", "fc_w"], ["fc_out"], name="fc"),
                  helper.make_node("Add", ["fc_out", "fc_b"], ["logits"], name="fc_bias")]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1))
        out = "probs"
    return make_model(nodes, [vi("x", shape)], [vi(out, 2)], weights, opset=opset,
                      constants_as_nodes=constants_as_nodes)


def opset11_zoo():
    """One model at opset 11 with every op whose signature changed up to opset 18."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        n("Split", ["c"], ["s1", "s2"], name="split_attr", axis=1, split=[2, 4]),
        n("Split", ["c"], ["e1", "e2"], name="split_equal", axis=1),
        n("Concat", ["s2", "e1", "s1"], ["cat"], name="cat", axis=1),
        n("Dropout", ["cat"], ["d"], name="dropout", ratio=0.3),
        n("Resize", ["d", "roi", "scales"], ["up"], name="up", mode="nearest"),
        n("ReduceMean", ["up"], ["m"], name="rmean", axes=[2, 3], keepdims=1),
        n("Squeeze", ["m"], ["sq"], name="squeeze", axes=[2, 3]),
        n("Unsqueeze", ["sq"], ["usq"], name="unsqueeze", axes=[2]),
        n("ReduceSum", ["usq"], ["rs"], name="rsum", axes=[2], keepdims=0),
        n("Softmax", ["up"], ["sm"], name="softmax_4d"),  # opset 11: over C×H×W together
        n("ReduceMax", ["sm"], ["smx"], name="rmax", axes=[1, 2, 3], keepdims=0),
        n("Clip", ["rs", "lo", "hi"], ["clip"], name="clip"),
    ]
    weights = [("w", f32(6, 3, 3, 3)), ("roi", np.zeros(0, np.float32)),
               ("scales", np.array([1, 1, 2, 2], np.float32)),
               ("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.5, np.float32))]
    return make_model(nodes, [vi("x", [1, 3, 5, 5])], [vi("clip", 2), vi("smx", 1)], weights,
                      opset=11, ir_version=6)
