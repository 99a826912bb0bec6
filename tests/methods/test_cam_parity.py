"""CAM-family layer maps against pytorch-grad-cam (before its normalization and resize) and
Captum (LayerGradCam, GuidedGradCam) on the same torch modules; skipped without them."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from onnxlens import Explainer  # noqa: E402
from torch_models import export, prepared  # noqa: E402

CLASSES = 5
TARGETS = [0, 3, 1]
SIZE = 96


def _tokens(grid, prefix):
    """pytorch-grad-cam's reshape_transform for patch tokens [N, prefix + h·w, D]."""
    return lambda t: t[:, prefix:].reshape(len(t), *grid, -1).permute(0, 3, 1, 2)


def _swin():
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=SIZE, patch_size=8, window_size=6, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                           num_classes=CLASSES)


def _vit():
    net = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=16, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=CLASSES)
    torch.nn.init.normal_(net.heads.head.weight)  # torchvision starts it at zero: no gradient at all
    return net


NETS = {  # constructor, the module whose output is onnxlens's default layer, and how it lies
    "resnet": (lambda: torchvision.models.resnet18(num_classes=CLASSES), lambda net: net.layer4[-1], None),
    "mobilenet": (lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=0.35),
                  lambda net: net.features[-1], None),
    # a class-token readout: the input of the last block's attention, as pytorch-grad-cam advises
    "vit": (_vit, lambda net: net.encoder.layers[-1].ln_1, _tokens((6, 6), 1)),
    # channels-last stages [N, h, w, C]
    "swin": (_swin, lambda net: net.norm, lambda t: t.permute(0, 3, 1, 2)),
}


@pytest.fixture(scope="module", params=list(NETS))
def setup(request, tmp_path_factory):
    torch.manual_seed(0)
    make, layer_of, reshape = NETS[request.param]
    net = prepared(make())
    x = torch.rand(3, 3, SIZE, SIZE)
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    export(net, x, path)
    return net, layer_of, reshape, x, Explainer(path, device="cpu")


def _rel(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture
def unscaled(monkeypatch):
    """pytorch-grad-cam's maps before its min-max scaling and resize."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


LIBRARY = {
    "gradcam": gradcam_lib.GradCAM,
    "gradcam_plus_plus": gradcam_lib.GradCAMPlusPlus,
    "eigencam": gradcam_lib.EigenCAM,
    "eigengradcam": gradcam_lib.EigenGradCAM,
    "layercam": gradcam_lib.LayerCAM,
    "fem": lambda **kw: gradcam_lib.FEM(k=1, **kw),
}


@pytest.mark.parametrize("name", LIBRARY)
def test_layer_map_matches_pytorch_grad_cam(name, setup, unscaled):
    net, layer_of, reshape, x, explainer = setup
    net = copy.deepcopy(net)
    with LIBRARY[name](model=net, target_layers=[layer_of(net)], reshape_transform=reshape) as cam:
        want = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    got = explainer.explain(x.numpy(), name, target=TARGETS)
    assert got.layer_map.shape == want.shape
    assert _rel(got.layer_map, want) <= 1e-4


def _channels_first(setup):
    if setup[2] is not None:
        pytest.skip("Captum's layer methods read a layer as [N, C, h, w]")
    return setup


def test_gradcam_matches_captum_layer_gradcam(setup):
    net, layer_of, _, x, explainer = _channels_first(setup)
    net = copy.deepcopy(net)
    want = captum_attr.LayerGradCam(net, layer_of(net)).attribute(
        x, target=TARGETS, relu_attributions=True).detach().numpy()[:, 0]
    assert _rel(explainer.explain(x.numpy(), "gradcam", target=TARGETS).layer_map, want) <= 1e-4


def test_guided_gradcam_matches_captum(setup):
    net, layer_of, _, x, explainer = _channels_first(setup)
    net = copy.deepcopy(net)
    want = captum_attr.GuidedGradCam(net, layer_of(net)).attribute(x, target=TARGETS).detach().numpy()
    assert _rel(explainer.explain(x.numpy(), "guided_gradcam", target=TARGETS).attribution, want) <= 1e-4
