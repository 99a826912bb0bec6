"""int8 models: QDQ graphs differentiate with the clipped straight-through estimator (torch's
fake-quantize backward), QOperator graphs are rewritten to QDQ and still compute what the
deployed file does, and every method runs on the shipped models quantized by ONNX Runtime."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from builders import make_model, vi
from conftest import MODELS, quantize_with_ort
from onnxlens import Explainer, import_model
from onnxlens.graph_ops.quantization import quantization_summary

SHAPES = MODELS / "shapes_cnn.onnx"


def _ste_model(elem, scale, zero, axis=None):
    """x → QuantizeLinear → DequantizeLinear → Mul(w) → ReduceSum: y = Σ w · fq(x), whose
    straight-through gradient is w where x quantizes inside the integer range, else 0."""
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize", **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dequantize", **attrs),
        helper.make_node("Mul", ["d", "w"], ["m"], name="weigh"),
        helper.make_node("ReduceSum", ["m", "axes"], ["y"], name="total", keepdims=0),
    ]
    w = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    zero = np.asarray(zero, dtype=helper.tensor_dtype_to_np_dtype(elem))
    weights = [("s", np.asarray(scale, np.float32)), ("z", zero), ("w", w),
               ("axes", np.array([2, 3], np.int64))]
    return make_model(nodes, [vi("x", ["N", 2, 3, 3])], [vi("y", ["N", 2])], weights), w


@pytest.mark.parametrize("elem, scale, zero, axis", [
    (TensorProto.INT8, 0.05, 3, None),
    (TensorProto.UINT8, 0.02, 128, None),
    (TensorProto.INT8, [0.03, 0.07], [0, -5], 1),
    (TensorProto.UINT8, [0.01, 0.04], [10, 200], 1),
], ids=["int8-tensor", "uint8-tensor", "int8-channel", "uint8-channel"])
def test_quantize_dequantize_pass_the_clipped_straight_through_gradient(elem, scale, zero, axis, save):
    model, w = _ste_model(elem, scale, zero, axis)
    x = np.random.default_rng(1).uniform(-10, 10, (3, 2, 3, 3)).astype(np.float32)
    e = Explainer(save(model), device="cpu").explain(x, "gradient", target=[0, 1, 1])
    low, high = (-128, 127) if elem == TensorProto.INT8 else (0, 255)
    s = np.asarray(scale, np.float32).reshape(-1, 1, 1)
    z = np.asarray(zero, np.float32).reshape(-1, 1, 1)
    level = np.round(x / s) + z
    inside = (level >= low) & (level <= high)
    want = np.zeros_like(x)
    for row, k in enumerate([0, 1, 1]):
        want[row, k] = w[0, k] * inside[row, k]
    assert 0 < inside.mean() < 1  # both sides of the clip are exercised
    np.testing.assert_array_equal(e.attribution == 0, want == 0)
    np.testing.assert_allclose(e.attribution, want, rtol=1e-6)  # (ct / scale) · scale: one rounding


@pytest.mark.parametrize("form", ["qdq", "qdq_per_channel", "qoperator"])
def test_quantized_shapes_model_explains_with_every_family(form, shapes_int8):
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:6].astype(np.float32)
    reference = Explainer(SHAPES, device="cpu").explain(x, "gradient")
    explainer = Explainer(shapes_int8[form], device="cpu")
    for method in ("gradient", "gradcam", "lrp", "occlusion"):
        e = explainer.explain(x, method)
        assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0, method
        assert (e.target == reference.target).all(), method
    gradient = explainer.explain(x, "gradient").attribution
    agreement = np.corrcoef(gradient.ravel(), reference.attribution.ravel())[0, 1]
    assert agreement > 0.8  # int8 changes the gradient, not what it looks at


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_quantized_digits_model_explains_with_every_family(fmt, tmp_path):
    x = np.load(MODELS / "samples" / "digits" / "test.npz")["x"][:24].astype(np.float32)
    path = quantize_with_ort(MODELS / "digits_cnn.onnx", x[:16], tmp_path, (("int8", fmt, True),))["int8"]
    deployed = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x[16:]})[0]
    explainer = Explainer(path, device="cpu")
    for method in ("gradient", "gradcam", "lrp", "occlusion"):
        e = explainer.explain(x[16:], method)
        assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0, method
        np.testing.assert_array_equal(e.target, deployed.argmax(axis=1))  # the model as deployed decides


def test_qoperator_graph_is_rewritten_to_qdq_and_computes_the_deployed_outputs(shapes_int8):
    imported = import_model(shapes_int8["qoperator"])
    assert any("integer-kernel node(s) to QDQ form" in note for note in imported.canonical_notes)
    ops = {n.op_type for n in imported.model.graph.node}
    assert not any(op.startswith("QLinear") or op == "QGemm" for op in ops) and "Conv" in ops
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:60].astype(np.float32)
    deployed = ort.InferenceSession(str(shapes_int8["qoperator"]), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(imported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    # ONNX Runtime fuses the QDQ form back into the same integer kernels: identical outputs
    np.testing.assert_array_equal(rewritten.run(None, {"image": x})[0], deployed.run(None, {"image": x})[0])


def _dynamic_int8(source, folder, per_channel, weight_type):
    """``source`` as ONNX Runtime's quantize_dynamic writes it: DynamicQuantizeLinear on the
    activations, MatMulInteger/ConvInteger, Cast, Mul by the scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(folder / "pre.onnx"))
    path = folder / f"dynamic_{weight_type}_{per_channel}.onnx"
    quantize_dynamic(str(folder / "pre.onnx"), str(path), per_channel=per_channel, weight_type=QuantType[weight_type])
    return path


DYNAMIC = [("shapes", False, "QInt8"), ("shapes", True, "QInt8"), ("digits", False, "QUInt8"), ("digits", True, "QInt8")]


@pytest.mark.parametrize("which, per_channel, weight_type", DYNAMIC, ids=["-".join(map(str, c)) for c in DYNAMIC])
def test_dynamic_int8_is_rewritten_to_qdq_and_explains_with_every_family(which, per_channel, weight_type, tmp_path):
    model = MODELS / ("shapes_cnn.onnx" if which == "shapes" else "digits_cnn.onnx")
    x = np.load(MODELS / "samples" / which / "test.npz")["x"][:24].astype(np.float32)
    path = _dynamic_int8(model, tmp_path, per_channel, weight_type)
    explainer = Explainer(path, device="cpu")
    ops = {n.op_type for n in explainer.model.model.graph.node}
    kept = [n for n in json.dumps(explainer.model.describe()).split('"') if n.startswith("QOperator nodes kept")]
    if kept and ops & {"ConvInteger", "MatMulInteger"}:
        # the safe fallback, stated: on some CPUs ONNX Runtime's integer kernels round a later
        # dynamic quantizer differently from the float form, so the rewrite fails verification
        pytest.skip(f"this CPU's integer kernels disagree with the rewritten form: {kept[0]}")
    assert not ops & {"MatMulInteger", "ConvInteger"} and {"Conv", "MatMul", "DynamicQuantizeLinear"} <= ops
    assert explainer.model.describe()["quantization"]["format"] == "dynamic"
    # the integer product is exact, the float one rounds; where that moves a later dynamic
    # quantizer by one level, the outputs move by about one quantization step
    deployed = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    rewritten = ort.InferenceSession(explainer.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for want, got in zip(deployed, rewritten.run(None, {"image": x})):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * np.abs(want).max())
        assert (np.abs(got - want) <= 1e-4 * np.abs(want).max()).mean() >= 0.9
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
    reference = Explainer(model, device="cpu").explain(x[:8], "gradient")
    for method in ("gradient", "gradcam", "lrp", "occlusion"):
        e = explainer.explain(x[:8], method)
        assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0, method
        if method == "lrp":  # the quantizers pass relevance on unchanged; the split-off biases take their share
            float_ratio = Explainer(model, device="cpu").explain(x[:8], "lrp").diagnostics["relevance_ratio"]
            np.testing.assert_allclose(e.diagnostics["relevance_ratio"], float_ratio, atol=0.03)
        if method == "gradient":
            agreement = np.corrcoef(e.attribution.ravel(), reference.attribution.ravel())[0, 1]
            assert agreement > 0.8  # int8 changes the gradient, not what it looks at


@pytest.mark.parametrize("returned", [(), ("p",), ("c",), ("sc",)], ids=["y", "+product", "+cast", "+scales"])
def test_the_dynamic_rewrite_keeps_every_tensor_the_graph_returns(returned):
    """x → DynamicQuantizeLinear → MatMulInteger → Cast → Mul(sa · sb): a chain with an inner
    tensor among the graph's outputs is left as it is; the rest computes the same values."""
    from onnxlens.graph_ops.qoperator import qoperator_to_qdq

    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("DynamicQuantizeLinear", ["x"], ["q", "sa", "za"]),
             n("MatMulInteger", ["q", "wq", "za", "wz"], ["p"]), n("Cast", ["p"], ["c"], to=TensorProto.FLOAT),
             n("Mul", ["sa", "sb"], ["sc"]), n("Mul", ["c", "sc"], ["y"])]
    weights = [("wq", rng.integers(-127, 128, (6, 3)).astype(np.int8)), ("wz", np.int8(0)),
               ("sb", np.float32(0.02))]
    outputs = [vi("y", ["N", 3])] + [vi(t, ["N", 3], TensorProto.INT32 if t == "p" else TensorProto.FLOAT)
                                     if t != "sc" else vi(t, []) for t in returned]
    model = make_model(nodes, [vi("x", ["N", 6])], outputs, weights, opset=18)
    rewritten, count = qoperator_to_qdq(model)
    assert count == (0 if returned in (("p",), ("c",)) else 1)
    produced = {o for node in rewritten.graph.node for o in node.output}
    assert {o.name for o in rewritten.graph.output} <= produced
    x = rng.uniform(-3, 3, (4, 6)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5)


def test_a_dynamic_quantizer_passes_the_cotangent_unchanged(save):
    """x → DynamicQuantizeLinear → DequantizeLinear: its range is x's own, so nothing saturates
    and the straight-through gradient is the identity (torch's fake-quantize backward)."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Mul", ["d", "w"], ["m"]),
             helper.make_node("ReduceSum", ["m", "axes"], ["y"], keepdims=0)]
    w = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    model = make_model(nodes, [vi("x", ["N", 2, 3, 3])], [vi("y", ["N", 2])],
                       [("w", w), ("axes", np.array([2, 3], np.int64))])
    x = np.random.default_rng(1).uniform(-10, 10, (3, 2, 3, 3)).astype(np.float32)
    e = Explainer(save(model), device="cpu").explain(x, "gradient", target=[0, 1, 1])
    want = np.zeros_like(x)
    for row, k in enumerate([0, 1, 1]):
        want[row, k] = w[0, k]
    np.testing.assert_allclose(e.attribution, want, rtol=1e-6)  # (ct / scale) · scale: one rounding


def test_qdq_and_qoperator_forms_of_one_quantization_give_one_gradient(shapes_int8):
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:4].astype(np.float32)
    qdq = Explainer(shapes_int8["qdq"], device="cpu").explain(x, "gradient").attribution
    qop = Explainer(shapes_int8["qoperator"], device="cpu").explain(x, "gradient").attribution
    np.testing.assert_allclose(qop, qdq, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form, fmt, granularity", [
    ("qdq", "QDQ", ["per-tensor"]), ("qdq_per_channel", "QDQ", ["per-channel", "per-tensor"]),
    ("qoperator", "QOperator", ["per-tensor"]),
])
def test_inspect_reports_the_quantization(form, fmt, granularity, shapes_int8, cli):
    result = cli("inspect", shapes_int8[form], "--json")
    assert result.returncode == 0, result.stderr
    quant = json.loads(result.stdout)["quantization"]
    assert quant["format"] == fmt and quant["granularity"] == granularity
    assert {"int8", "uint8"} <= set(quant["types"]) and "Conv" in "".join(quant["ops"])
    assert "quantization" in cli("inspect", shapes_int8[form]).stdout
    assert quantization_summary(onnx.load(SHAPES)) is None


def _qat_net(torch, per_channel: bool):
    """A small CNN prepared for quantization-aware training (FakeQuantize modules, ``convert``
    not applied), calibrated, observers off; weights snapped to their int8 grid so torch and
    ONNX round them alike (torch multiplies by 1/scale, ONNX divides by scale)."""
    import torch.ao.quantization as tq
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.dequant(self.fc(self.body(self.quant(x))))

    if per_channel:  # int8 activations with a zero point, per-channel symmetric weights
        activation = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=-128,
                                               quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_affine)
        weight = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                           quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                           ch_axis=0)
    else:  # uint8 activations, per-tensor symmetric weights
        activation = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0,
                                               quant_max=255, dtype=torch.quint8)
        weight = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=-128,
                                           quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    torch.manual_seed(0)
    net = Net().train()
    net.qconfig = tq.QConfig(activation=activation, weight=weight)
    tq.prepare_qat(net, inplace=True)
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(8, 3, 12, 12))
    net.apply(tq.disable_observer)
    with torch.no_grad():
        for layer in (net.body[0], net.body[2], net.fc):
            layer.weight.copy_(layer.weight_fake_quant(layer.weight))
    return net.eval()


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_gradient_matches_torch_through_the_same_fake_quantize_ops(per_channel, tmp_path):
    torch = pytest.importorskip("torch")
    net = _qat_net(torch, per_channel)
    path = tmp_path / "qat.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 12, 12),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(path).graph.node}
    x = np.random.default_rng(0).random((3, 3, 12, 12), dtype=np.float32) * 1.3  # past the calibrated range
    target = [0, 1, 2]
    e = Explainer(path, device="cpu").explain(x, "gradient", target=target)
    xt = torch.from_numpy(x).requires_grad_()
    net(xt)[[0, 1, 2], target].sum().backward()
    want = xt.grad.numpy()
    assert (want == 0).mean() > 0.05  # the input quantizer saturates: the clip is exercised
    assert np.linalg.norm(e.attribution - want) / np.linalg.norm(want) <= 1e-4


def _saturating_classifier():
    """x → Gemm (3 logits) → QuantizeLinear → DequantizeLinear: an output quantizer calibrated
    on logits far smaller than the ones it now sees (scale 1e-3: ±0.13), as an int8 face
    classifier calibrated on background crops."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 12)).astype(np.float32) * 5
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["logits_float"], name="fc", transB=1),
        helper.make_node("QuantizeLinear", ["logits_float", "s", "z"], ["logits_q"], name="out_quantize"),
        helper.make_node("DequantizeLinear", ["logits_q", "s", "z"], ["logits"], name="out_dequantize"),
    ]
    weights = [("w", w), ("s", np.array(1e-3, np.float32)), ("z", np.array(0, np.int8))]
    return make_model(nodes, [vi("x", ["N", 3, 2, 2])], [vi("logits", ["N", 3])], weights), w


def test_a_saturated_quantizer_is_named_and_the_unclipped_estimator_is_offered(save, cli):
    model, w = _saturating_classifier()
    path = save(model)
    x = np.ones((1, 3, 2, 2), np.float32)
    explainer = Explainer(path, device="cpu")
    clipped = explainer.explain(x, "gradient", target=0)
    assert not clipped.attribution.any()
    assert len(clipped.warnings) == 1 and "'logits_float'" in clipped.warnings[0] and "ste=identity" in clipped.warnings[0]
    unclipped = explainer.explain(x, "gradient", target=0, ste="identity")
    np.testing.assert_allclose(unclipped.attribution.reshape(-1), w[0], rtol=1e-6)
    assert not unclipped.warnings and unclipped.params["ste"] == "identity"
    np.save(path.parent / "x.npy", x)
    result = cli("explain", path, "--input", path.parent / "x.npy", "--method", "gradient", "--target", "0",
                 "--out", path.parent / "e.npz")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("onnxlens: warning:") == 1 and "logits_float" in result.stderr
    bad = cli("explain", path, "--input", path.parent / "x.npy", "--method", "gradient", "--param", "ste=round",
              "--out", path.parent / "e.npz")
    assert bad.returncode == 1 and "ste must be one of clipped, identity" in bad.stderr


def test_saturated_output_quantizer_of_the_shipped_model_int8_form(shapes_int8):
    """Test image 12 of the shapes model: its triangle logit (6.4) lies beyond the range its
    output quantizer was calibrated for, so the clipped gradient is exactly zero."""
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][12:13].astype(np.float32)
    explainer = Explainer(shapes_int8["qdq"], device="cpu")
    clipped = explainer.explain(x, "gradient")
    assert not clipped.attribution.any() and "'linear'" in clipped.warnings[0]
    unclipped = explainer.explain(x, "gradient", ste="identity")
    assert unclipped.attribution.any() and not unclipped.warnings
