"""LRP composites against Zennit on the same torch modules (VGG-, ResNet- and MobileNet-style) (BatchNorm merged by Zennit's
canonizer on the torch side, folded by the exporter on ours); Zennit runs in float64.
Skipped where torch or Zennit is absent."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zennit_composites = pytest.importorskip("zennit.composites")
from torch import nn  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402

from onnxlens import Explainer  # noqa: E402
from torch_models import export, prepared  # noqa: E402

TARGETS = [0, 3, 1]
COMPOSITES = {
    "epsilon_plus": lambda: zennit_composites.EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_plus_flat": lambda: zennit_composites.EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_alpha2_beta1": lambda: zennit_composites.EpsilonAlpha2Beta1(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_alpha2_beta1_flat": lambda: zennit_composites.EpsilonAlpha2Beta1Flat(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_gamma_box": lambda: zennit_composites.EpsilonGammaBox(low=0.0, high=1.0, canonizers=[SequentialMergeBatchNorm()]),
}


def _vgg_style():
    layers, c = [], 3
    for width in (8, 16):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5))


def _mobilenet_style():
    """Depthwise-separable blocks (MobileNet v1): depthwise 3×3 and pointwise 1×1 convolutions,
    BatchNorm, ReLU6, global average pooling."""

    def unit(c_in, c_out, kernel, stride=1, groups=1):
        return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups), nn.BatchNorm2d(c_out), nn.ReLU6()]

    layers = unit(3, 8, 3, stride=2)
    for c_in, c_out, stride in ((8, 16, 1), (16, 24, 2)):
        layers += unit(c_in, c_in, 3, stride, groups=c_in) + unit(c_in, c_out, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))


@pytest.fixture(scope="module", params=["vgg", "mobilenet"])
def setup(request, tmp_path_factory):
    torch.manual_seed(0)
    net = prepared({"vgg": _vgg_style, "mobilenet": _mobilenet_style}[request.param]())
    x = torch.rand(3, 3, 16, 16)
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    export(net, x, path)
    return net, x, Explainer(path, device="cpu")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = prepared(torchvision.models.resnet18(num_classes=5))
    x = torch.rand(3, 3, 64, 64)
    path = tmp_path_factory.mktemp("resnet") / "m.onnx"
    export(net, x, path)
    return net, x, Explainer(path, device="cpu")


@pytest.mark.parametrize("preset", ["epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_resnet_residual_sums_match_zennit(preset, resnet):
    """Zennit's ResNetCanonizer makes each residual sum a Sum module (Norm rule); onnxlens gives
    the Norm rule to every Add of two computed tensors. Reached: ~4e-5 (float32 vs float64)."""
    from zennit.torchvision import ResNetCanonizer

    net, x, explainer = resnet
    make = {"epsilon_plus_flat": zennit_composites.EpsilonPlusFlat,
            "epsilon_alpha2_beta1": zennit_composites.EpsilonAlpha2Beta1,
            "epsilon_gamma_box": lambda canonizers: zennit_composites.EpsilonGammaBox(0.0, 1.0, canonizers=canonizers)}
    one_hot = torch.eye(5, dtype=torch.float64)[TARGETS]
    with Gradient(model=copy.deepcopy(net).double(), composite=make[preset](canonizers=[ResNetCanonizer()])) as attributor:
        _, want = attributor(x.double(), lambda out: out * one_hot)
    got = explainer.explain(x.numpy(), "lrp", preset=preset, target=TARGETS).attribution
    assert np.linalg.norm(got - want.numpy()) / np.linalg.norm(want.numpy()) <= 1e-4


@pytest.mark.parametrize("preset", COMPOSITES)
def test_composite_matches_zennit(preset, setup):
    net, x, explainer = setup
    model = copy.deepcopy(net).double()
    one_hot = torch.eye(5, dtype=torch.float64)[TARGETS]
    with Gradient(model=model, composite=COMPOSITES[preset]()) as attributor:
        _, want = attributor(x.double(), lambda out: out * one_hot)
    want = want.numpy()
    got = explainer.explain(x.numpy(), "lrp", preset=preset, target=TARGETS).attribution
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4


@pytest.mark.parametrize("preset, make", [("epsilon_plus_flat", zennit_composites.EpsilonPlusFlat),
                                          ("epsilon_alpha2_beta1", zennit_composites.EpsilonAlpha2Beta1)])
def test_zero_bias_matches_zennit_zero_params(preset, make, setup):
    """Biases (the folded BatchNorm shifts among them) left out of z: Zennit's zero_params='bias'."""
    net, x, explainer = setup
    one_hot = torch.eye(5, dtype=torch.float64)[TARGETS]
    composite = make(canonizers=[SequentialMergeBatchNorm()], zero_params="bias")
    with Gradient(model=copy.deepcopy(net).double(), composite=composite) as attributor:
        _, want = attributor(x.double(), lambda out: out * one_hot)
    got = explainer.explain(x.numpy(), "lrp", preset=preset, target=TARGETS, zero_bias=True)
    # without their biases some neurons' z come near zero, where float32 rounding grows (1.6e-4 here)
    assert np.linalg.norm(got.attribution - want.numpy()) / np.linalg.norm(want.numpy()) <= 3e-4
