"""Every VJP rule against directional central finite differences on small graphs.

Inputs are kept away from kinks (|x| ≥ 0.1 where a rule has one) so the difference quotient
is exact up to O(eps²) and float32 rounding; tolerance: 1e-3 relative to the larger side.
"""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from builders import make_model, vi
from onnxlens.graph_ops.backward import append_vjp
from vjp_check import half_defined, half_vjp, vjp_and_fd, with_run_shapes

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seeded_rng(request):
    """Each test draws from its own seeded generator: results do not depend on test order."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def away_from_zero(*shape, low=0.1):
    x = RNG.uniform(low, 1.0, shape) * RNG.choice([-1.0, 1.0], shape)
    return x.astype(np.float32)


def single(op, x_shape, out_rank, *, extra=(), weights=(), opset=18, **attrs):
    """A one-node graph ``op(x, *extra)`` with ``weights`` as initializers."""
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    return make_model([node], [vi("x", list(x_shape))], [vi("y", out_rank)], weights, opset=opset)


def check(model, x, rtol=1e-3, **kw):
    """The rule against finite differences; then the same graph in float16 (where ONNX defines
    its ops for float16) must type-check and give the same cotangent to float16 precision."""
    got, want, grad = vjp_and_fd(model, {"x": x}, "x", "y", **kw)
    assert abs(want) > 1e-3, "degenerate check: the function does not change along the direction"
    assert got == pytest.approx(want, rel=rtol, abs=1e-4 * max(1.0, abs(want)))
    if not half_defined(model):
        return
    half = half_vjp(model, {"x": x}, "x", "y", **{k: v for k, v in kw.items() if k == "rules"})
    assert half.dtype == np.float16
    scale = float(np.abs(grad).max())
    np.testing.assert_allclose(half.astype(np.float32), grad, rtol=3e-2, atol=3e-2 * max(scale, 1e-3))


W = lambda *s: RNG.standard_normal(s).astype(np.float32)  # noqa: E731

CONV_CASES = {
    "plain": (dict(), (1, 3, 7, 7), (4, 3, 3, 3)),
    "stride2-odd": (dict(strides=[2, 2]), (2, 3, 9, 7), (4, 3, 3, 3)),
    "stride2-pads": (dict(strides=[2, 2], pads=[1, 1, 1, 1]), (1, 3, 8, 8), (4, 3, 3, 3)),
    "asymmetric-pads": (dict(pads=[0, 1, 2, 1]), (1, 2, 6, 5), (3, 2, 3, 3)),
    "dilation2": (dict(dilations=[2, 2], pads=[2, 2, 2, 2]), (1, 2, 9, 9), (3, 2, 3, 3)),
    "depthwise": (dict(group=4, pads=[1, 1, 1, 1]), (1, 4, 6, 6), (4, 1, 3, 3)),
    "grouped-dilated-stride": (dict(group=2, dilations=[2, 1], strides=[2, 3]), (1, 4, 11, 10), (6, 2, 3, 2)),
    "same-upper-stride2": (dict(auto_pad="SAME_UPPER", strides=[2, 2]), (1, 2, 7, 8), (3, 2, 3, 3)),
    "same-lower": (dict(auto_pad="SAME_LOWER"), (1, 2, 6, 6), (3, 2, 4, 4)),
    "valid-stride3": (dict(auto_pad="VALID", strides=[3, 3]), (1, 2, 10, 11), (3, 2, 3, 3)),
    "1x1-stride2": (dict(strides=[2, 2]), (1, 3, 7, 7), (5, 3, 1, 1)),
    "resnet-stem": (dict(strides=[2, 2], pads=[3, 3, 3, 3]), (1, 3, 16, 16), (4, 3, 7, 7)),
    "1d": (dict(strides=[2], pads=[1, 0]), (2, 3, 9), (4, 3, 3)),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case):
    attrs, xs, ws = CONV_CASES[case]
    model = single("Conv", xs, len(xs), extra=["w", "b"], weights=[("w", W(*ws)), ("b", W(ws[0]))], **attrs)
    check(model, W(*xs))


@pytest.mark.parametrize("case", ["stride2-pads", "stride2-odd", "1x1-stride2", "resnet-stem"])
def test_strided_adjoint_pads_are_symmetric(case):
    """ONNX Runtime's CUDA provider moves a ConvTranspose with asymmetric pads to the CPU (and
    copies its tensors both ways): the usual stride-2 adjoints keep their pads symmetric."""
    attrs, xs, ws = CONV_CASES[case]
    model = single("Conv", xs, len(xs), extra=["w"], weights=[("w", W(*ws))], **attrs)
    vjp = append_vjp(with_run_shapes(model, {"x": W(*xs)}), ["y"], ["x"])
    transposes = [n for n in vjp.model.graph.node if n.op_type == "ConvTranspose"]
    assert transposes
    for node in transposes:
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0, 0, 0])
        assert pads[:2] == pads[2:], pads


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 0, 1, 0], output_padding=[1, 1]),
                                   dict(group=2), dict(dilations=[2, 2])], ids=str)
def test_conv_transpose(attrs):
    cin = 4
    ws = (cin, 3 // (1 if attrs.get("group", 1) == 1 else 1) if attrs.get("group", 1) == 1 else 2, 3, 3)
    model = single("ConvTranspose", (1, cin, 5, 5), 4, extra=["w"], weights=[("w", W(*ws))], **attrs)
    check(model, W(1, cin, 5, 5))


@pytest.mark.parametrize("attrs, shapes", [
    (dict(), ((3, 4), (4, 5), (5,))),
    (dict(transB=1, alpha=0.5, beta=2.0), ((3, 4), (5, 4), (1, 5))),
    (dict(transA=1), ((4, 3), (4, 5), (3, 5))),
    (dict(transA=1, transB=1), ((4, 3), (5, 4), (5,))),
], ids=["plain", "transB-alpha-beta", "transA", "both"])
def test_gemm(attrs, shapes):
    xs, bs, cs = shapes
    model = single("Gemm", xs, 2, extra=["b", "c"], weights=[("b", W(*bs)), ("c", W(*cs))], **attrs)
    check(model, W(*xs))


@pytest.mark.parametrize("xs, bs", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2))], ids=str)
def test_matmul(xs, bs):
    check(single("MatMul", xs, max(len(xs), len(bs)), extra=["b"], weights=[("b", W(*bs))]), W(*xs))


def test_matmul_second_operand():
    node = helper.make_node("MatMul", ["a", "x"], ["y"])
    model = make_model([node], [vi("x", [2, 4, 3])], [vi("y", 3)], [("a", W(5, 4))])
    check(model, W(2, 4, 3))


BINARY_SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((1, 3, 1), (2, 3, 4)), ((4,), (2, 3, 4))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
@pytest.mark.parametrize("xs, other", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("x_first", [True, False], ids=["x-left", "x-right"])
def test_binary_broadcasting(op, xs, other, x_first):
    if op == "Pow" and not x_first:
        pytest.skip("a variable exponent is covered by test_pow_variable_exponent")
    const = RNG.uniform(0.5, 1.5, other).astype(np.float32) if op in ("Div", "Pow") else W(*other)
    if op == "Pow":
        const = np.float32(RNG.choice([2.0, 3.0, 0.5])) * np.ones(other, np.float32)
    x = RNG.uniform(0.5, 1.5, xs).astype(np.float32) if op in ("Div", "Pow") else W(*xs)
    if op in ("Max", "Min"):  # keep every pair at least 0.1 apart: no tie within eps
        x, const = away_from_zero(*xs), RNG.choice([-1.5, 0.0, 1.5], other).astype(np.float32)
    inputs = ["x", "c"] if x_first else ["c", "x"]
    node = helper.make_node(op, inputs, ["y"])
    rank = max(len(xs), len(other))
    model = make_model([node], [vi("x", list(xs))], [vi("y", rank)], [("c", const)])
    check(model, x)


def test_pow_variable_exponent():
    node = helper.make_node("Pow", ["c", "x"], ["y"])
    model = make_model([node], [vi("x", [2, 3])], [vi("y", 2)], [("c", RNG.uniform(0.5, 2, (2, 3)).astype(np.float32))])
    check(model, W(2, 3))


def test_same_tensor_on_both_sides_sums():
    node = helper.make_node("Mul", ["x", "x"], ["y"])
    check(make_model([node], [vi("x", [2, 5])], [vi("y", 2)]), W(2, 5))


UNARY = {
    "Relu": {}, "LeakyRelu": {"alpha": 0.2}, "Elu": {"alpha": 0.7}, "Selu": {}, "Celu": {"alpha": 1.3},
    "Sigmoid": {}, "Tanh": {}, "Softplus": {}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4}, "HardSwish": {},
    "Exp": {}, "Neg": {}, "Abs": {}, "Erf": {}, "Identity": {}, "Sin": {}, "Cos": {},
}


@pytest.mark.parametrize("op", UNARY)
def test_unary(op):
    x = away_from_zero(2, 3, 4) * 4  # spans HardSwish's and HardSigmoid's three pieces
    check(single(op, x.shape, 3, **UNARY[op]), x)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = away_from_zero(2, 3, 4) * 3
    check(single("Gelu", x.shape, 3, opset=20, approximate=approximate), x)


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_positive_domain_unary(op):
    check(single(op, (2, 5), 2), RNG.uniform(0.5, 2.0, (2, 5)).astype(np.float32))


def test_prelu():
    check(single("PRelu", (2, 3, 4, 4), 4, extra=["s"], weights=[("s", W(3, 1, 1))]), away_from_zero(2, 3, 4, 4))


@pytest.mark.parametrize("bounds", [("lo", "hi"), ("lo", ""), ("", "hi")], ids=str)
def test_clip(bounds):
    weights = [("lo", np.float32(-0.5)), ("hi", np.float32(0.6))]
    x = away_from_zero(3, 7)
    x[np.abs(np.abs(x) - 0.55) < 0.06] = 0.3  # keep off the bounds
    check(single("Clip", x.shape, 2, extra=list(bounds), weights=weights), x)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(op, axis):
    check(single(op, (2, 4, 3), 3, axis=axis), W(2, 4, 3))


MAXPOOL_CASES = {
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "overlapping": dict(kernel_shape=[3, 3], strides=[1, 1]),
    "overlap-stride2-pads": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "ceil-pads": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    "ceil-odd": dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "dilated": dict(kernel_shape=[2, 2], dilations=[2, 2]),
    "same-upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
}


@pytest.mark.parametrize("case", MAXPOOL_CASES)
def test_max_pool(case):
    x = RNG.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7).astype(np.float32) / 10  # no ties within eps
    check(single("MaxPool", x.shape, 4, **MAXPOOL_CASES[case]), x)


AVGPOOL_CASES = {
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "pads-include": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    "pads-exclude": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
    "ceil-exclude": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    "ceil-include": dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1, count_include_pad=1),
    "asymmetric": dict(kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 1]),
    "1d": dict(kernel_shape=[3], strides=[2], pads=[1, 1]),
}


@pytest.mark.parametrize("case", AVGPOOL_CASES)
def test_average_pool(case):
    attrs = AVGPOOL_CASES[case]
    shape = (2, 3, 7) if case == "1d" else (2, 3, 7, 8)
    check(single("AveragePool", shape, len(shape), opset=19, **attrs), W(*shape))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    x = RNG.permutation(2 * 3 * 5 * 4).reshape(2, 3, 5, 4).astype(np.float32) / 10
    check(single(op, x.shape, 4), x)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1",
                                "ReduceSumSquare"])
@pytest.mark.parametrize("axes, keepdims", [([2, 3], 1), ([1], 0), (None, 0)], ids=str)
def test_reductions(op, axes, keepdims):
    x = RNG.permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.float32) / 10
    extra, weights = ([], []) if axes is None else (["axes"], [("axes", np.array(axes, np.int64))])
    rank = 4 if keepdims else (0 if axes is None else 4 - len(axes))
    check(single(op, x.shape, rank, extra=extra, weights=weights, keepdims=keepdims), x)


@pytest.mark.parametrize("axes", [[0], [0, 2]], ids=str)
def test_mean_over_a_symbolic_batch_axis(axes):
    x = W(2, 3, 4, 5)
    model = single("ReduceMean", ("N", 3, 4, 5), 4, extra=["axes"], weights=[("axes", np.array(axes, np.int64))])
    assert with_run_shapes(model, {"x": x}).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    check(model, x)


def test_batch_norm():
    c = 3
    weights = [("s", W(c)), ("b", W(c)), ("m", W(c)), ("v", RNG.uniform(0.5, 2, c).astype(np.float32))]
    check(single("BatchNormalization", (2, c, 4, 4), 4, extra=["s", "b", "m", "v"], weights=weights, epsilon=1e-3),
          W(2, c, 4, 4))


def test_instance_norm():
    weights = [("s", W(3)), ("b", W(3))]
    check(single("InstanceNormalization", (2, 3, 4, 5), 4, extra=["s", "b"], weights=weights), W(2, 3, 4, 5))


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm(axis):
    shape = (2, 3, 4)
    norm_shape = shape[axis % 3:]
    weights = [("s", W(*norm_shape)), ("b", W(*norm_shape))]
    check(single("LayerNormalization", shape, 3, extra=["s", "b"], weights=weights, axis=axis), W(*shape))


SHAPE_CASES = {
    "Flatten": (dict(axis=1), [], [], (2, 3, 4, 5), 2),
    "Reshape": ({}, ["shape"], [("shape", np.array([2, -1, 5], np.int64))], (2, 3, 4, 5), 3),
    "Squeeze": ({}, ["axes"], [("axes", np.array([1], np.int64))], (2, 1, 4, 5), 3),
    "Unsqueeze": ({}, ["axes"], [("axes", np.array([0, 3], np.int64))], (2, 4, 5), 5),
    "Transpose": (dict(perm=[0, 2, 3, 1]), [], [], (2, 3, 4, 5), 4),
    "Expand": ({}, ["shape"], [("shape", np.array([2, 3, 4, 5], np.int64))], (3, 1, 5), 4),
    "Tile": ({}, ["reps"], [("reps", np.array([1, 2, 3], np.int64))], (2, 3, 4), 3),
    "DepthToSpace-DCR": (dict(blocksize=2, mode="DCR"), [], [], (1, 8, 3, 2), 4),
    "DepthToSpace-CRD": (dict(blocksize=2, mode="CRD"), [], [], (1, 8, 3, 2), 4),
    "SpaceToDepth": (dict(blocksize=2), [], [], (1, 2, 4, 6), 4),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_shape_ops(case):
    attrs, extra, weights, shape, rank = SHAPE_CASES[case]
    check(single(case.split("-")[0], shape, rank, extra=extra, weights=weights, **attrs), W(*shape))


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1], [3], [1], [1]),
    ([0, 1], [2, 100], [2, 3], [1, 1]),
    ([0], [5], [3], [2]),
    ([-1], [-100], [1], [-1]),
    ([3, -4], [0, 9], [2, 3], [-2, 3]),
], ids=str)
def test_slice(starts, ends, axes, steps):
    weights = [(k, np.array(v, np.int64)) for k, v in zip(("st", "en", "ax", "sp"), (starts, ends, axes, steps))]
    check(single("Slice", (2, 3, 4, 6), 4, extra=["st", "en", "ax", "sp"], weights=weights), W(2, 3, 4, 6))


@pytest.mark.parametrize("indices, axis", [(np.array([2, 0, 2]), 1), (np.array(1), 2), (np.array([-1, 0]), 0),
                                           (np.array([[0, 3], [3, 1], [2, 2]]), 1)], ids=str)
def test_gather(indices, axis):
    shape = (3, 4, 5)
    rank = 3 + indices.ndim - 1
    check(single("Gather", shape, rank, extra=["i"], weights=[("i", indices.astype(np.int64))], axis=axis), W(*shape))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 2, 1], [0, 1, 0, 0, 0, 0, 0, 3]], ids=["spatial", "channel"])
def test_pad(mode, pads):
    if mode == "wrap" and pads[1]:
        pytest.skip("wrap beyond the axis size")
    weights = [("p", np.array(pads, np.int64)), ("v", np.float32(0.5))]
    check(single("Pad", (2, 3, 4, 5), 4, extra=["p", "v"], weights=weights, mode=mode, opset=19), W(2, 3, 4, 5))


def test_negative_pads_crop():
    weights = [("p", np.array([0, 0, -1, 1, 0, 0, 1, -2], np.int64))]
    check(single("Pad", (2, 3, 4, 5), 4, extra=["p"], weights=weights), W(2, 3, 4, 5))


def test_concat_and_split():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["x", "r", "x"], ["c"], axis=1),
        helper.make_node("Split", ["c", "sizes"], ["s1", "s2", "s3"], axis=1),
        helper.make_node("Mul", ["s1", "s3"], ["y"]),  # s2 gets no cotangent: zeros fill in
    ]
    model = make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", 3)], [("sizes", np.array([2, 5, 2], np.int64))])
    check(model, away_from_zero(2, 3, 4))


def test_concat_along_a_symbolic_batch_axis():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r"], ["c"], axis=0),
             helper.make_node("Mul", ["c", "c"], ["y"])]
    check(make_model(nodes, [vi("x", ["N", 3, 4])], [vi("y", 3)]), away_from_zero(2, 3, 4))


@pytest.mark.parametrize("mode, coord", [
    ("nearest", "asymmetric"), ("nearest", "half_pixel"), ("linear", "half_pixel"), ("linear", "align_corners"),
    ("linear", "pytorch_half_pixel"), ("cubic", "half_pixel"), ("linear", "asymmetric"),
], ids=str)
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.5, 1.5], [1, 1, 1.7, 1]], ids=str)
def test_resize(mode, coord, scales):
    weights = [("s", np.array(scales, np.float32))]
    check(single("Resize", (1, 2, 6, 5), 4, extra=["", "s"], weights=weights, mode=mode,
                 coordinate_transformation_mode=coord), W(1, 2, 6, 5))


def test_resize_sizes():
    weights = [("sz", np.array([1, 2, 9, 4], np.int64))]
    check(single("Resize", (1, 2, 6, 5), 4, extra=["", "", "sz"], weights=weights, mode="linear"), W(1, 2, 6, 5))


def test_where_with_constant_condition():
    weights = [("cond", np.array([[True], [False], [True]])), ("other", W(2, 3, 4))]  # x reaches y, not everywhere
    check(single("Where", (2, 3, 4), 3, extra=[], weights=weights).__class__ and
          make_model([helper.make_node("Where", ["cond", "x", "other"], ["y"])], [vi("x", [2, 3, 4])],
                     [vi("y", 3)], weights), W(2, 3, 4))


def test_cast_between_floats():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=10), helper.make_node("Cast", ["h"], ["y"], to=1)]
    # float16 rounding needs a wide step: the round trip is the identity up to 1e-3 relative
    check(make_model(nodes, [vi("x", [2, 3])], [vi("y", 2)]), W(2, 3), rtol=2e-2, eps=0.25)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    stride=st.integers(1, 3), dilation=st.integers(1, 2), kernel=st.integers(1, 4), groups=st.sampled_from([1, 2]),
    pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), size=st.tuples(st.integers(5, 11), st.integers(5, 11)),
)
def test_conv_property(stride, dilation, kernel, groups, pads, size):
    """Any Conv geometry: the adjoint (flipped-kernel Conv or ConvTranspose) matches finite differences."""
    if any(s + pads[i] + pads[i + 2] < dilation * (kernel - 1) + 1 for i, s in enumerate(size)):
        return  # no output position
    rng = np.random.default_rng(stride * 1000 + dilation * 100 + kernel * 10 + groups)
    w = rng.standard_normal((4, 4 // groups, kernel, kernel)).astype(np.float32)
    model = single("Conv", (1, 4, *size), 4, extra=["w"], weights=[("w", w)], strides=[stride, stride],
                   dilations=[dilation, dilation], pads=pads, group=groups)
    check(model, rng.standard_normal((1, 4, *size)).astype(np.float32))
