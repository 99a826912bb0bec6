"""The backward compiler as a whole: pruning, overrides, errors, simplification, real models."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from builders import conv_classifier, f32, make_model, vi
from conftest import MODELS
from onnxlens import errors, import_model
from onnxlens.graph_ops.backward import (
    RuleSet, append_vjp, backward_coverage, by_node, by_op, by_tensor, first_layer, gradient_model,
)
from onnxlens.graph_ops.simplify import drop_noops, fold_batchnorm
from vjp_check import vjp_and_fd, with_run_shapes


def _run(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _grad(vjp, feeds, output, wrt, seed):
    return _run(vjp.model, {**feeds, vjp.seeds[output]: seed})[vjp.grads[wrt]]


def _relu_net():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "k"], ["y"], name="scale")]
    return make_model(nodes, [vi("x", [2, 6])], [vi("y", 2)], [("k", np.full((6,), 3.0, np.float32))])


def guided_relu(ctx):
    """Guided Backprop's ReLU: pass only positive cotangents where the input was positive."""
    g = ctx.g
    keep = g.op("And", g.op("Greater", ctx.inputs[0], g.const(0.0)), g.op("Greater", ctx.ct, g.const(0.0)))
    return [g.op("Where", keep, ctx.ct, g.const(0.0))]


@pytest.mark.parametrize("selector", [by_op("Relu"), by_node("relu"), by_tensor("r")], ids=["op", "node", "tensor"])
def test_rule_override_replaces_default(selector):
    model = with_run_shapes(_relu_net(), {"x": f32(2, 6)})
    x, seed = f32(2, 6), f32(2, 6)
    default = _grad(append_vjp(model, ["y"], ["x"]), {"x": x}, "y", "x", seed)
    guided = _grad(append_vjp(model, ["y"], ["x"], RuleSet().with_rule(selector, guided_relu)), {"x": x}, "y", "x", seed)
    ct = seed * 3.0
    np.testing.assert_allclose(default, np.where(x > 0, ct, 0), rtol=1e-6)
    np.testing.assert_allclose(guided, np.where((x > 0) & (ct > 0), ct, 0), rtol=1e-6)


def test_custom_rule_sets_on_one_engine_do_not_share_a_compiled_graph():
    """Compiled graphs are cached by what a rule set computes, not by its name ("custom" for
    both here); a composite built twice from the same parameters compiles once."""
    from onnxlens.graph_ops.backward.relevance import composite
    from onnxlens.runtime.engine import Engine

    engine = Engine(import_model(MODELS / "digits_cnn.onnx"))
    x = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:2]
    seed = engine.one_hot(np.array([1, 2]))

    def zero_relu(ctx):
        return [ctx.g.zeros_like(ctx.ct)]

    def pass_relu(ctx):
        return [ctx.ct]

    zeroed = engine.vjp(x, seed, rules=RuleSet().with_rule(by_op("Relu"), zero_relu)).grads[engine.input_name]
    passed = engine.vjp(x, seed, rules=RuleSet().with_rule(by_op("Relu"), pass_relu)).grads[engine.input_name]
    assert not np.abs(zeroed).any() and np.abs(passed).max() > 0
    misses = engine.cache.misses
    for _ in range(2):
        engine.vjp(x, seed, rules=composite("epsilon", epsilon=0.1))
    assert engine.cache.misses == misses + 1


@pytest.mark.parametrize("names", [("conv_a", "conv_b"), ("", "")], ids=["named", "unnamed"])
def test_first_layer_selector_picks_the_first_conv_only(names):
    """Also when node names are empty (many third-party exports): selection is by output."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name=names[0], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["y"], name=names[1], pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", 4)], [("w1", f32(3, 2, 3, 3)), ("w2", f32(2, 3, 3, 3))])
    model = with_run_shapes(model, {"x": f32(1, 2, 5, 5)})
    seen = []

    def doubled(ctx):
        seen.append(ctx.node.output[0])
        from onnxlens.graph_ops.backward import VJP_RULES
        (dx,) = VJP_RULES["Conv"](ctx)
        return [ctx.g.op("Mul", dx, ctx.g.const(2.0))]

    x, seed = f32(1, 2, 5, 5), f32(1, 2, 5, 5)
    plain = _grad(append_vjp(model, ["y"], ["x"]), {"x": x}, "y", "x", seed)
    twice = _grad(append_vjp(model, ["y"], ["x"], RuleSet().with_rule(first_layer(), doubled)), {"x": x}, "y", "x", seed)
    assert seen == ["c1"]
    np.testing.assert_allclose(twice, 2 * plain, rtol=1e-5)


def test_unsupported_ops_are_all_named():
    nodes = [
        helper.make_node("Asinh", ["x"], ["s"], name="asinh"),
        helper.make_node("Atan", ["s"], ["c"], name="atan"),
        helper.make_node("Atan", ["c"], ["y"], name="atan2"),
    ]
    model = with_run_shapes(make_model(nodes, [vi("x", [2, 3])], [vi("y", 2)]), {"x": f32(2, 3)})
    with pytest.raises(errors.UnsupportedOperatorError, match=r"'Asinh' \(node 'asinh'\), 'Atan' \(node 'atan', 'atan2'\)") as info:
        append_vjp(model, ["y"], ["x"])
    assert info.value.missing == ("Asinh", "Atan")
    assert backward_coverage(model, ["y"], ["x"]) == {"Asinh": ["asinh"], "Atan": ["atan", "atan2"]}


def test_ops_off_the_path_need_no_rule():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Asinh", ["x"], ["side"]),  # not on the path to y
    ]
    model = with_run_shapes(make_model(nodes, [vi("x", [2, 3])], [vi("y", 2), vi("side", 2)]), {"x": f32(2, 3)})
    assert backward_coverage(model, ["y"], ["x"]) == {}
    append_vjp(model, ["y"], ["x"])


def test_integer_shape_paths_are_pruned():
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero1"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Tanh", ["flat"], ["y"]),
    ]
    weights = [("zero", np.array(0, np.int64)), ("zero1", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64))]
    model = make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", 2)], weights)
    got, want, _ = vjp_and_fd(model, {"x": f32(2, 3, 4)}, "x", "y")
    assert got == pytest.approx(want, rel=1e-3)


def test_gradient_at_inner_tensor_and_input_together():
    model = import_model(conv_classifier().SerializeToString()).model
    x, seed = f32(2, 3, 8, 8), f32(2, 4)
    both = append_vjp(model, ["logits"], ["x", "r"])
    alone = append_vjp(model, ["logits"], ["x"])
    out = _run(both.model, {"x": x, both.seeds["logits"]: seed})
    np.testing.assert_allclose(out[both.grads["x"]], _grad(alone, {"x": x}, "logits", "x", seed), rtol=1e-5, atol=1e-6)
    # the cotangent at the ReLU output of a GAP → Gemm head is W^T·seed spread over 8×8 positions
    fc_w = [t for t in model.graph.initializer if t.name == "fc_w"][0]
    w = np.frombuffer(fc_w.raw_data, np.float32).reshape(4, 6)
    expected = np.broadcast_to((seed @ w)[:, :, None, None] / 64, (2, 6, 8, 8))
    np.testing.assert_allclose(out[both.grads["r"]], expected, rtol=1e-5, atol=1e-7)
    # totals: only each row's sum of a cotangent comes out, for a tensor in wrt or not
    summed = append_vjp(model, ["logits"], ["x"], totals=["r", "x"])
    got = _run(summed.model, {"x": x, summed.seeds["logits"]: seed})
    assert set(summed.grads) == {"x"} and got[summed.totals["r"]].shape == (2,)
    np.testing.assert_allclose(got[summed.totals["r"]], expected.sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got[summed.totals["x"]], out[both.grads["x"]].sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)


def _relu_scale_chain(length):
    nodes = [helper.make_node(("Relu", "Mul")[i % 2], [f"t{i - 1}" if i else "x", *(["k"] if i % 2 else [])],
                              [f"t{i}"]) for i in range(length)]
    nodes.append(helper.make_node("Identity", [f"t{length - 1}"], ["y"]))
    model = make_model(nodes, [vi("x", [2, 6])], [vi("y", 2)], [("k", np.full((6,), 0.5, np.float32))])
    return with_run_shapes(model, {"x": f32(2, 6)})


def test_a_deep_backward_graph_shares_its_small_constants():
    """One initializer per distinct small value, not per node; one node per row total."""
    sizes = {}
    for length in (10, 40):
        vjp = append_vjp(_relu_scale_chain(length), ["y"], ["x"], totals=[f"t{i}" for i in range(length)])
        sizes[length] = len(vjp.model.graph.initializer), len(vjp.model.graph.node)
    assert sizes[10][0] == sizes[40][0]
    assert sizes[40][1] - sizes[10][1] <= 4 * 30  # forward node, VJP, total, accumulation


def test_output_independent_of_wrt_is_an_error():
    model = with_run_shapes(_relu_net(), {"x": f32(2, 6)})
    with pytest.raises(errors.InvalidModelError, match="is not in the graph"):
        append_vjp(model, ["y"], ["nope"])


def _bn_after(layer):
    if layer == "Conv":
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), ]
        weights = [("w", f32(4, 3, 3, 3)), ("b", f32(4))]
        shape, rank = [2, 3, 6, 6], 4
    else:
        nodes = [helper.make_node("Gemm", ["x", "w"], ["c"], transB=1, alpha=1.0, beta=0.5)]
        weights = [("w", f32(4, 3))]
        shape, rank = [2, 3], 2
    nodes.append(helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["y"], epsilon=1e-3))
    weights += [("s", f32(4)), ("o", f32(4)), ("m", f32(4)), ("v", np.random.default_rng(0).uniform(0.5, 2, 4).astype(np.float32))]
    return make_model(nodes, [vi("x", shape)], [vi("y", rank)], weights), shape


@pytest.mark.parametrize("layer", ["Conv", "Gemm"])
def test_fold_batchnorm_is_exact(layer):
    model, shape = _bn_after(layer)
    folded, count = fold_batchnorm(model)
    assert count == 1 and "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    x = f32(*shape)
    np.testing.assert_allclose(_run(folded, {"x": x})["y"], _run(model, {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_batchnorm_without_a_layer_before_stays():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "o", "m", "v"], ["y"])]
    weights = [(k, np.ones(3, np.float32)) for k in "somv"]
    model = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", 4)], weights)
    assert fold_batchnorm(model)[1] == 0


def test_fuse_matmul_add_is_exact():
    from builders import conv_classifier
    from onnxlens.graph_ops.simplify import fuse_matmul_add

    model = import_model(conv_classifier(head="matmul").SerializeToString()).model
    fused, count = fuse_matmul_add(model)
    assert count == 1 and [n.op_type for n in fused.graph.node][-1] == "Gemm"
    assert not {"MatMul", "Add"} & {n.op_type for n in fused.graph.node}
    x = f32(2, 3, 8, 8)
    np.testing.assert_allclose(_run(fused, {"x": x})["logits"], _run(model, {"x": x})["logits"], rtol=1e-5, atol=1e-6)


def test_fuse_matmul_add_leaves_batched_matmul():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    model = make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", 3)], [("w", f32(4, 5)), ("b", f32(5))])
    model = onnx.shape_inference.infer_shapes(model)
    from onnxlens.graph_ops.simplify import fuse_matmul_add

    assert fuse_matmul_add(model)[1] == 0


def test_drop_noops():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Dropout", ["i"], ["d"]),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),  # a graph output: kept
    ]
    model = make_model(nodes, [vi("x", [2, 3])], [vi("y", 2)])
    dropped, count = drop_noops(model)
    assert count == 2 and [n.op_type for n in dropped.graph.node] == ["Relu", "Identity"]
    x = f32(2, 3)
    np.testing.assert_array_equal(_run(dropped, {"x": x})["y"], np.maximum(x, 0))


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.onnx")), ids=lambda p: p.name)
def test_every_shipped_model_differentiates(path):
    imported = import_model(path)
    grad = gradient_model(imported.model, imported.spec)
    spec = imported.spec
    x = np.random.default_rng(0).random([3] + [int(d) for d in spec.image_input.shape[1:]], dtype=np.float32)
    out = _run(grad.vjp.model, {spec.image_input.name: x, grad.vjp.seeds[grad.score]: np.eye(3, _classes(spec))[[0, 1, 2]].astype(np.float32)})
    g = out[grad.vjp.grads[spec.image_input.name]]
    assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).sum() > 0


def _classes(spec):
    return int(spec.output().shape[-1])


def test_score_is_the_logit_behind_softmax_unless_probability_asked():
    imported = import_model(MODELS / "shapes_cnn.onnx")
    assert gradient_model(imported.model, imported.spec).score == imported.spec.output().logits
    assert gradient_model(imported.model, imported.spec, score="probability").score == "probabilities"


def _input_grad(model_bytes, x, seed):
    imported = import_model(model_bytes)
    vjp = append_vjp(imported.model, ["logits"], ["x"])
    return _grad(vjp, {"x": x}, "logits", "x", seed)


def test_nhwc_model_gradient_is_the_transposed_nchw_gradient():
    x, seed = f32(2, 3, 8, 8), f32(2, 4)
    nchw = _input_grad(conv_classifier("NCHW").SerializeToString(), x, seed)
    nhwc = _input_grad(conv_classifier("NHWC").SerializeToString(), x.transpose(0, 2, 3, 1).copy(), seed)
    np.testing.assert_allclose(nhwc, nchw.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-7)


def test_constant_node_weights_differentiate_like_initializers():
    x, seed = f32(2, 3, 8, 8), f32(2, 4)
    a = _input_grad(conv_classifier(constants_as_nodes=False).SerializeToString(), x, seed)
    b = _input_grad(conv_classifier(constants_as_nodes=True).SerializeToString(), x, seed)
    np.testing.assert_array_equal(a, b)
