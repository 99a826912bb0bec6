"""Breadth: timm architectures (random weights, BatchNorm statistics from a random batch, small
inputs) through both torch exporters. inspect's backward verdict must agree with explain, the
gradient must be as close to torch's float64 gradient as torch's own float32 one is (the
networks' conditioning sets the floor) — or, where the float64 gradient itself jumps under a
2e-6 relative change of the input (a LeakyReLU or max-pool decision within float32 rounding,
which ONNX Runtime's blocked NCHWc convolutions may round the other way from torch: one such
flip moves CSPDarknet-53's gradient by 1.7e-2), within twice that jump — and Grad-CAM and LRP
run, LRP warning exactly where its relevance is not conserved, Grad-CAM's default layer giving
a map that is not constant (channels-last stages and patch tokens read on their grid). A few
run by default; the whole grid (the ``breadth`` marker) where ``ONNXLENS_BREADTH=1``: about 15
minutes on 2 cores."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from onnxlens import Explainer  # noqa: E402

ARCHITECTURES = [
    "resnet18", "efficientnet_b0", "mobilenetv3_small_050", "mobilenetv4_conv_small", "regnetx_002", "densenet121",
    "cspdarknet53", "hrnet_w18_small", "ghostnet_050", "rexnet_100", "res2net50_14w_8s", "dpn68", "tresnet_m",
    "convnext_atto", "convnextv2_atto", "edgenext_xx_small", "poolformer_s12", "mobilevit_xxs",
    "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "levit_128s",
]
EXPORTERS = ["torchscript", "dynamo"]
#: run in CI: a patch unfold (MobileViT), GRN's ReduceL2 (ConvNeXt-V2), the dynamo exporter
QUICK = {("mobilevit_xxs", "torchscript"), ("convnextv2_atto", "torchscript"), ("convnext_atto", "dynamo")}
#: where LRP's default composite does not conserve relevance (|Σ relevance − score| above half
#: the mean |score|), so LRP warns. Every rule is conservative (0.98–1.00 on EfficientNet-B0 and
#: MobileNetV3 with their biases zeroed); on these random-weight networks the biases — folded
#: BatchNorm shifts — take much of it: Σ relevance / score 0.09–0.36 on EfficientNet-B0,
#: MobileNetV3/V4, GhostNet, RexNet and MobileViT, 0.43–0.6 on CSPDarknet-53 and DPN-68, rows
#: of opposite sign on ResNet-18 and DenseNet-121 (ConvNeXt, EdgeNeXt, PoolFormer, Swin 1.00,
#: DeiT 0.90, LeViT 0.81–0.96)
UNCONSERVED = {"resnet18", "efficientnet_b0", "mobilenetv3_small_050", "mobilenetv4_conv_small", "densenet121",
               "cspdarknet53", "ghostnet_050", "rexnet_100", "dpn68", "mobilevit_xxs"}


def _cases():
    for arch in ARCHITECTURES:
        for exporter in EXPORTERS:
            marks = [] if (arch, exporter) in QUICK else [
                pytest.mark.breadth, pytest.mark.skipif(not os.environ.get("ONNXLENS_BREADTH"),
                                                        reason="the full grid runs where ONNXLENS_BREADTH=1")]
            yield pytest.param(arch, exporter, marks=marks, id=f"{arch}-{exporter}")


def _network(arch):
    torch.manual_seed(0)
    net = timm.create_model(arch, num_classes=5, pretrained=False)
    cfg = net.pretrained_cfg or {}
    size = cfg["input_size"][-1] if cfg.get("fixed_input_size") else 64
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.rand(4, 3, size, size))
    return net.eval(), size


def _export(net, size, exporter, path):
    x = torch.rand(1, 3, size, size)
    if exporter == "torchscript":
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}})
        return
    try:
        torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"], verbose=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=64)}})
    except Exception:  # torch.export specializes the batch of some models (ConvNeXt): a fixed batch of 1
        torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"], verbose=False)


def _torch_gradient(net, x, target, dtype):
    xt = torch.from_numpy(x).to(dtype).requires_grad_()
    net.to(dtype)(xt)[np.arange(len(x)), target].sum().backward()
    net.float()
    return xt.grad.double().numpy()


def _second_difference(net, x, target, step=2e-6):
    """‖g(x(1+h)) + g(x(1−h)) − 2 g(x)‖ / ‖g(x)‖ of the float64 gradient g: O(h²) where g is
    smooth, the size of the jump where a kink lies within h."""
    g = [_torch_gradient(net, x * s, target, torch.float64) for s in (1 + step, 1 - step, 1)]
    return float(np.linalg.norm(g[0] + g[1] - 2 * g[2]) / np.linalg.norm(g[2]))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("arch, exporter", list(_cases()))
def test_architecture(arch, exporter, tmp_path):
    net, size = _network(arch)
    path = tmp_path / "model.onnx"
    _export(net, size, exporter, path)
    explainer = Explainer(path, device="cpu")
    assert explainer.model.backward_support()["supported"]
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    target = np.array([1, 3])
    e = explainer.explain(x, "gradient", target=target)
    reference = _torch_gradient(net, x, target, torch.float64)
    floor = _rel(_torch_gradient(net, x, target, torch.float32), reference)
    jump = max(_second_difference(net, x[i:i + 1], target[i:i + 1]) for i in range(len(x)))
    assert _rel(e.attribution, reference) <= max(1e-4, 10 * floor, 2 * jump)
    for method in ("gradcam", "lrp"):
        e = explainer.explain(x, method)
        warns = method == "lrp" and arch in UNCONSERVED
        assert np.isfinite(e.heatmap).all() and bool(e.warnings) == warns, (method, e.warnings)
        assert all(w.startswith("relevance is not conserved") for w in e.warnings), e.warnings
        if method == "gradcam":  # a map over the image's grid that the score reaches, not a constant
            assert e.layer_map.ndim == 3 and np.ptp(e.layer_map) > 0, e.params
