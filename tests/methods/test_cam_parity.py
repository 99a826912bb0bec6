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


NETS = {  # constructor, and the module whose output is onnxlens's default layer
    "resnet": (lambda: torchvision.models.resnet18(num_classes=CLASSES), lambda net: net.layer4[-1]),
    "mobilenet": (lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=0.35),
                  lambda net: net.features[-1]),
}


@pytest.fixture(scope="module", params=list(NETS))
def setup(request, tmp_path_factory):
    torch.manual_seed(0)
    make, layer_of = NETS[request.param]
    net = prepared(make())
    x = torch.rand(3, 3, SIZE, SIZE)
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    export(net, x, path)
    return net, layer_of, x, Explainer(path, device="cpu")


def _rel(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture
def unscaled(monkeypatch):
    """pytorch-grad-cam's maps before its min-max scaling and resize."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)


LIBRARY = {
    "gradcam": lambda net, layer: gradcam_lib.GradCAM(model=net, target_layers=[layer]),
    "gradcam_plus_plus": lambda net, layer: gradcam_lib.GradCAMPlusPlus(model=net, target_layers=[layer]),
    "eigencam": lambda net, layer: gradcam_lib.EigenCAM(model=net, target_layers=[layer]),
    "eigengradcam": lambda net, layer: gradcam_lib.EigenGradCAM(model=net, target_layers=[layer]),
    "layercam": lambda net, layer: gradcam_lib.LayerCAM(model=net, target_layers=[layer]),
    "fem": lambda net, layer: gradcam_lib.FEM(model=net, target_layers=[layer], k=1),
}


@pytest.mark.parametrize("name", LIBRARY)
def test_layer_map_matches_pytorch_grad_cam(name, setup, unscaled):
    net, layer_of, x, explainer = setup
    net = copy.deepcopy(net)
    with LIBRARY[name](net, layer_of(net)) as cam:
        want = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    got = explainer.explain(x.numpy(), name, target=TARGETS)
    assert got.layer_map.shape == want.shape
    assert _rel(got.layer_map, want) <= 1e-4


def test_gradcam_matches_captum_layer_gradcam(setup):
    net, layer_of, x, explainer = setup
    net = copy.deepcopy(net)
    want = captum_attr.LayerGradCam(net, layer_of(net)).attribute(
        x, target=TARGETS, relu_attributions=True).detach().numpy()[:, 0]
    assert _rel(explainer.explain(x.numpy(), "gradcam", target=TARGETS).layer_map, want) <= 1e-4


def test_guided_gradcam_matches_captum(setup):
    net, layer_of, x, explainer = setup
    net = copy.deepcopy(net)
    want = captum_attr.GuidedGradCam(net, layer_of(net)).attribute(x, target=TARGETS).detach().numpy()
    assert _rel(explainer.explain(x.numpy(), "guided_gradcam", target=TARGETS).attribution, want) <= 1e-4
