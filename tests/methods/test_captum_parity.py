"""Gradient-family methods against Captum on the same torch modules, exported in the test
(relative L2 ≤ 1e-4). Captum runs in float64; rows that sit on a kink within float32 rounding
are excluded (at most half of them; see ``_reference``). Skipped where torch or Captum is absent."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")
from torch import nn  # noqa: E402

from onnxlens import Explainer  # noqa: E402
from torch_models import export, prepared  # noqa: E402

CLASSES = 5
TARGETS = [0, 3, 1, 4]


def _resnet_style():
    return torchvision.models.resnet18(num_classes=CLASSES)


def _vgg_style():
    layers, c = [], 3
    for width in (8, 16, 16):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def _mobilenet_style():
    return torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=0.35)


MODULES = {"resnet": _resnet_style, "vgg": _vgg_style, "mobilenet": _mobilenet_style}


@pytest.fixture(scope="module", params=list(MODULES))
def setup(request, tmp_path_factory):
    torch.manual_seed(0)
    net = prepared(MODULES[request.param]())
    x = torch.rand(4, 3, 32, 32)
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    export(net, x, path)
    return net, x, Explainer(path, device="cpu")


def _reference(make, net, x, **kw):
    """Captum's attribution in float64, and the rows off kinks: rows where Captum's float32
    result differs from its float64 one, or where the float64 result jumps when the input is
    scaled by 1 ± 2e-6 (a ReLU or max-pool decision within float32 rounding of flipping, which
    another float32 implementation may resolve the other way), by more than 1e-5."""
    import copy

    def attribute(dtype, scale=1.0):
        model = copy.deepcopy(net).to(dtype)
        return make(model).attribute(x.to(dtype) * scale, target=TARGETS, **kw).detach().double().numpy()

    want = attribute(torch.float64)
    nearby = [attribute(torch.float32), attribute(torch.float64, 1 + 2e-6), attribute(torch.float64, 1 - 2e-6)]
    errors = [max(np.linalg.norm(other[i] - want[i]) for other in nearby) / max(np.linalg.norm(want[i]), 1e-30)
              for i in range(len(want))]
    keep = np.array([e <= 1e-5 for e in errors])
    assert keep.sum() >= 2, f"too many kink rows: {errors}"
    return want, keep


def _compare(got, want, keep):
    err = np.linalg.norm(got[keep] - want[keep]) / np.linalg.norm(want[keep])
    assert err <= 1e-4, err


def test_saliency(setup):
    net, x, explainer = setup
    want, keep = _reference(captum_attr.Saliency, net, x, abs=False)
    _compare(explainer.explain(x.numpy(), "gradient", target=TARGETS).attribution, want, keep)


def test_input_x_gradient(setup):
    net, x, explainer = setup
    want, keep = _reference(captum_attr.InputXGradient, net, x)
    _compare(explainer.explain(x.numpy(), "input_x_gradient", target=TARGETS).attribution, want, keep)


@pytest.mark.parametrize("ours, theirs", [("gausslegendre", "gausslegendre"), ("riemann_trapezoid", "riemann_trapezoid"),
                                          ("riemann_left", "riemann_left")])
def test_integrated_gradients(setup, ours, theirs):
    net, x, explainer = setup
    want, keep = _reference(captum_attr.IntegratedGradients, net, x, n_steps=16, method=theirs)
    got = explainer.explain(x.numpy(), "integrated_gradients", target=TARGETS, steps=16, quadrature_rule=ours)
    _compare(got.attribution, want, keep)


@pytest.mark.parametrize("kind, nt_type", [("smoothgrad", "smoothgrad"), ("smoothgrad_squared", "smoothgrad_sq"),
                                           ("vargrad", "vargrad")])
def test_noise_tunnel_with_fixed_noise(setup, kind, nt_type, monkeypatch):
    net, x, explainer = setup
    samples = 3
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (samples, *x.shape)).astype(np.float32))
    # Captum draws its noise with torch.normal; hand it ours, sample-major as Captum expands inputs
    expanded = noise.transpose(0, 1).reshape(-1, *x.shape[1:])
    monkeypatch.setattr(torch, "normal", lambda mean, std, size=None, **kw: expanded.to(std.dtype if torch.is_tensor(std) else torch.float64))

    def make(model):
        return captum_attr.NoiseTunnel(captum_attr.Saliency(model))

    want, keep = _reference(make, net, x, nt_type=nt_type, nt_samples=samples, stdevs=0.1, abs=False)
    got = explainer.explain(x.numpy(), kind, target=TARGETS, noise=noise.numpy())
    _compare(got.attribution, want, keep)


def test_guided_backprop(setup):
    net, x, explainer = setup
    want, keep = _reference(captum_attr.GuidedBackprop, net, x)
    _compare(explainer.explain(x.numpy(), "guided_backprop", target=TARGETS).attribution, want, keep)


def test_deconvolution(setup):
    net, x, explainer = setup
    want, keep = _reference(captum_attr.Deconvolution, net, x)
    _compare(explainer.explain(x.numpy(), "deconvnet", target=TARGETS).attribution, want, keep)


@pytest.mark.parametrize("baseline", ["zeros", "blur"])
def test_deeplift_rescale(setup, baseline, request):
    net, x, explainer = setup
    which = request.node.callspec.params["setup"]
    if which == "resnet":
        pytest.skip("torchvision's ResNet reuses one ReLU module per block, which Captum's DeepLift hooks cannot follow")
    from onnxlens.methods.gradients import make_baseline

    base = make_baseline(explainer.engine, x.numpy(), baseline, 5.0, 0)
    want, keep = _reference(captum_attr.DeepLift, net, x, baselines=torch.from_numpy(base))
    # Captum drops its MaxPool multipliers after a ReLU: maxpool="gradient" is what it computes
    got = explainer.explain(x.numpy(), "deeplift", target=TARGETS, baseline=baseline, maxpool="gradient")
    _compare(got.attribution, want, keep)
