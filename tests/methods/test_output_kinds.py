"""Region targets on a segmentation model and step/sequence targets on a CTC-style recognizer,
against torch autograd, pytorch-grad-cam's SemanticSegmentationTarget and Captum on the same
modules (skipped without them); the kinds' errors; the command line."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from torch import nn  # noqa: E402

from onnxlens import Explainer, Target  # noqa: E402
from onnxlens.methods.targets import TargetError  # noqa: E402
from torch_models import export, prepared  # noqa: E402

SIZE, CLASSES, CATEGORY = 128, 4, 2


class Segmenter(nn.Module):
    """torchvision's FCN (an FCNHead on a dilated ResNet's last stage, upsampled to the input;
    a ResNet-18 backbone, random weights), its ``out`` map [N, C, H, W]."""

    def __init__(self):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.fcn import FCN, FCNHead

        resnet = torchvision.models.resnet18()
        self.model = FCN(IntermediateLayerGetter(resnet, {"layer4": "out"}), FCNHead(512, CLASSES))

    def forward(self, x):
        return self.model(x)["out"]


class Recognizer(nn.Module):
    """A CTC text recognizer's shape: convolutions, the height averaged away, one step per
    column, scores over the classes [N, T, C] — log-probabilities, probabilities (PP-OCR) or
    bare logits, per ``head``; no biases, so relevance is conserved exactly."""

    def __init__(self, head: str = "log_softmax"):
        super().__init__()
        self.head = head
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU())
        self.classify = nn.Linear(8, 6, bias=False)

    def logits(self, x):
        return self.classify(self.features(x).mean(dim=2).permute(0, 2, 1))

    def forward(self, x):
        logits = self.logits(x)
        return logits if self.head == "logits" else getattr(torch, self.head)(logits, dim=2)


def _rel(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    torch.manual_seed(0)
    net = prepared(Segmenter())
    x = torch.rand(2, 3, SIZE, SIZE)
    path = tmp_path_factory.mktemp("fcn") / "fcn.onnx"
    export(net, x, path)
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[8:40, 16:56] = 1
    return net, x, Explainer(path, device="cpu"), mask, path


def _region_score(net, mask):
    return lambda x: (net(x)[:, CATEGORY] * torch.from_numpy(mask)).sum(dim=(1, 2))


def test_region_gradient_ig_and_occlusion_match_torch_and_captum(segmenter):
    net, x, explainer, mask, _ = segmenter
    target = Target(CATEGORY, region=mask)
    xg = x.clone().requires_grad_()
    _region_score(net, mask)(xg).sum().backward()
    got = explainer.explain(x.numpy(), "gradient", target)
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4
    np.testing.assert_allclose(got.score, _region_score(net, mask)(x).detach().numpy(), rtol=1e-4)
    assert got.target.tolist() == [CATEGORY, CATEGORY] and got.params["target"] == "region=array"
    exact = _region_score(copy.deepcopy(net).double(), mask.astype(np.float64))
    want = captum_attr.IntegratedGradients(exact).attribute(x.double(), n_steps=8, method="gausslegendre")
    # at two of the 16 points a max-pool or ReLU decision lies within float32 rounding of flipping
    # (1e-3 and 3e-3 there against float64, 7e-7 at the others)
    assert _rel(explainer.explain(x.numpy(), "integrated_gradients", target, steps=8).attribution, want.numpy()) <= 1e-3
    want = captum_attr.Occlusion(_region_score(net, mask)).attribute(x, sliding_window_shapes=(3, 16, 16),
                                                                     strides=(3, 16, 16), baselines=0.0)
    got = explainer.explain(x.numpy(), "occlusion", target, window=16, stride=16, fill=0.0, score="logit")
    assert _rel(got.attribution, want.numpy()) <= 1e-4


def test_region_gradcam_matches_pytorch_grad_cam(segmenter, monkeypatch):
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)  # before scaling
    net, x, explainer, mask, _ = segmenter
    net = copy.deepcopy(net)
    layer = [c.name for c in explainer.engine.layers() if "layer4" in c.name][-1]
    with gradcam_lib.GradCAM(model=net, target_layers=[net.model.backbone.layer4]) as cam:
        want = cam(input_tensor=x.clone(), targets=[SemanticSegmentationTarget(CATEGORY, mask)] * len(x))
    got = explainer.explain(x.numpy(), "gradcam", Target(CATEGORY, region=mask), layer=layer)
    assert _rel(got.layer_map, want) <= 1e-4


def test_box_predicted_and_default_targets_weigh_the_right_pixels(segmenter, tmp_path):
    net, x, explainer, _, _ = segmenter
    with torch.no_grad():
        out = net(x).numpy()
    box = np.zeros((SIZE, SIZE), np.float32)
    box[4:20, 10:30] = 1  # box=x0,y0,x1,y1 = 10,4,30,20
    e = explainer.explain(x.numpy(), "gradient", f"class={CATEGORY},box=10,4,30,20")
    np.testing.assert_allclose(e.score, (out[:, CATEGORY] * box).sum(axis=(1, 2)), rtol=1e-4)
    labels = out.argmax(axis=1)
    common = np.bincount(labels.ravel()).argmax()  # a class some pixels of every row are predicted as
    assert all((row == common).any() for row in labels)
    e = explainer.explain(x.numpy(), "gradient", Target(int(common), predicted=True))
    np.testing.assert_allclose(e.score, (out[:, common] * (labels == common)).sum(axis=(1, 2)), rtol=1e-4)
    rare = np.bincount(labels.ravel(), minlength=CLASSES).argmin()
    with pytest.raises(TargetError, match="holds no pixel predicted as its class in row"):
        explainer.explain(x.numpy(), "gradient", Target(int(rare), predicted=True))
    default = explainer.explain(x.numpy(), "gradient")  # the whole map, the class of the largest sum
    np.testing.assert_array_equal(default.target, out.sum(axis=(2, 3)).argmax(axis=1))
    np.testing.assert_allclose(default.score, out.sum(axis=(2, 3)).max(axis=1), rtol=1e-4)
    from PIL import Image

    Image.fromarray((box * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    e = explainer.explain(x.numpy(), "gradient", f"class={CATEGORY},region={tmp_path / 'mask.png'}")
    np.testing.assert_allclose(e.score, (out[:, CATEGORY] * box).sum(axis=(1, 2)), rtol=1e-4)


@pytest.mark.parametrize("spec, message", [
    ("step=3", "a dense map: step applies to sequence outputs"),
    ("class=2,box=0,0,199,10", "box 0,0,199,10 must satisfy"),
    ("class=9", r"class index in 0\.\.3"),
    ("region=/nonexistent/mask.png", "cannot read the region mask"),
])
def test_dense_target_errors_name_the_output(segmenter, spec, message):
    with pytest.raises(TargetError, match=message):
        segmenter[2].explain(segmenter[1].numpy(), "gradient", spec)


def test_region_mask_of_another_size_is_refused(segmenter):
    with pytest.raises(TargetError, match=r"mask has shape \[2, 10, 10\]"):
        segmenter[2].explain(segmenter[1].numpy(), "gradient", Target(1, region=np.ones((10, 10))))


def _recognizer(tmp_path_factory, head):
    torch.manual_seed(1)
    net = Recognizer(head).eval()
    x = torch.rand(3, 3, 16, 40)
    path = tmp_path_factory.mktemp("ocr") / f"ocr_{head}.onnx"
    export(net, x, path)
    return net, x, Explainer(path, device="cpu")


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    return _recognizer(tmp_path_factory, "log_softmax")


@pytest.fixture(scope="module", params=["log_softmax", "softmax", "logits"])
def any_recognizer(request, tmp_path_factory):
    """Recognizers ending in LogSoftmax, in Softmax (as PP-OCR's) and in bare logits."""
    return _recognizer(tmp_path_factory, request.param)


def _log_probabilities(net, x):
    return torch.log_softmax(net.logits(x), dim=2)


@pytest.mark.parametrize("score", ["probability", "logit", None])
def test_sequence_and_step_targets_match_torch(any_recognizer, score):
    """The probability score of a sequence (its default) is the log-probability, whatever the
    model's head: the sequence target is the greedy path's log-likelihood."""
    net, x, explainer = any_recognizer
    readout = net.logits if score == "logit" else lambda t: _log_probabilities(net, t)
    given = {} if score is None else {"score": score}
    with torch.no_grad():
        path = net(x).argmax(dim=2)
    weights = torch.nn.functional.one_hot(path, 6).float()
    xg = x.clone().requires_grad_()
    (readout(xg) * weights).sum().backward()
    got = explainer.explain(x.numpy(), "gradient", "sequence", **given)
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4
    assert got.target.tolist() == [-1, -1, -1] and got.params["score"] == (score or "probability")
    with torch.no_grad():
        np.testing.assert_allclose(got.score, (readout(x) * weights).sum(dim=(1, 2)).numpy(), rtol=1e-4)
    xg = x.clone().requires_grad_()
    readout(xg)[:, 7, 4].sum().backward()
    got = explainer.explain(x.numpy(), "gradient", "step=7,class=4", **given)
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4 and got.target.tolist() == [4, 4, 4]


def test_sequence_occlusion_matches_captum(any_recognizer):
    """Perturbation methods score the same log-likelihood as gradient methods explain."""
    net, x, explainer = any_recognizer
    with torch.no_grad():
        weights = torch.nn.functional.one_hot(net(x).argmax(dim=2), 6).float()
    want = captum_attr.Occlusion(lambda t: (_log_probabilities(net, t) * weights).sum(dim=(1, 2))).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0.0)
    got = explainer.explain(x.numpy(), "occlusion", "sequence", window=8, stride=8, fill=0.0)
    assert _rel(got.attribution, want.numpy()) <= 1e-4


def test_sequence_robustness_re_explains_the_same_path(recognizer):
    """Max-sensitivity of a sequence target compares gradients of the original path's
    log-likelihood at the moved inputs (torch autograd)."""
    from onnxlens.evaluation import evaluate

    net, x, explainer = recognizer
    e = explainer.explain(x.numpy(), "gradient", "sequence", abs=False)
    got = evaluate(explainer.engine, x.numpy(), [e], ["max_sensitivity"], baselines=[],
                   params={"max_sensitivity": {"samples": 2, "radius": 0.5}})
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (2, *x.shape)).astype(np.float32)
    weights = torch.from_numpy(e.weights)
    change = []
    for n in noise:
        moved = (x + torch.from_numpy(n)).requires_grad_()
        (net(moved) * weights).sum().backward()
        change.append(np.linalg.norm((moved.grad.numpy() - e.attribution).reshape(len(x), -1), axis=1))
    want = np.max(change, axis=0) / np.linalg.norm(e.attribution.reshape(len(x), -1), axis=1)
    np.testing.assert_allclose(got["metrics"]["max_sensitivity"]["results"]["gradient"]["per_image"], want, rtol=1e-3)


@pytest.mark.parametrize("spec, message", [("region=m.png", "a sequence: region applies to dense outputs"),
                                           ("class=2", "give step=t with class=K"),
                                           ("step=40", r"step must be in 0\.\.39")])
def test_sequence_target_errors(recognizer, spec, message):
    with pytest.raises(TargetError, match=message):
        recognizer[2].explain(recognizer[1].numpy(), "gradient", spec)


def test_cli_explains_a_region(segmenter, tmp_path, cli):
    from PIL import Image

    _, x, _, mask, path = segmenter
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    np.save(tmp_path / "x.npy", x.numpy()[:1])
    run = cli("explain", path, "--input", tmp_path / "x.npy", "--method", "gradcam", "--target",
              f"class={CATEGORY},region={tmp_path / 'mask.png'}", "--out", tmp_path / "e.npz")
    assert run.returncode == 0, run.stderr
    assert f"class [{CATEGORY}]" in run.stdout and "region=" in run.stdout, run.stdout


@pytest.mark.parametrize("method", ["lrp", "gradcam", "deeplift", "rise"])
@pytest.mark.parametrize("kind", ["region", "sequence"])
def test_every_family_explains_each_kind(method, kind, segmenter, recognizer):
    if kind == "region":
        _, x, explainer, mask, _ = segmenter
        target = Target(CATEGORY, region=mask)
    else:
        _, x, explainer = recognizer
        target = Target(sequence=True)
    e = explainer.explain(x.numpy(), method, target, **({"masks": 64} if method == "rise" else {}))
    assert np.isfinite(e.attribution).all() and np.abs(e.heatmap).max() > 0 and not e.warnings
    if method == "lrp":  # relevance sums to the explained score (biases take their share, as on classifiers)
        low = 0.5 if kind == "region" else 0.999
        assert ((e.diagnostics["relevance_ratio"] > low) & (e.diagnostics["relevance_ratio"] < 1.001)).all()


class Detector(nn.Module):
    """YOLO-shaped: a convolutional backbone, a 1×1 head of 4 coordinates, an objectness and 3
    class scores per grid cell, sigmoids, the cells as boxes: [N, 64, 8] (``transposed``:
    YOLOv8's [N, 4 + 3, 64], no objectness)."""

    def __init__(self, transposed=False):
        super().__init__()
        self.transposed = transposed
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(16, 7 if transposed else 8, 1)

    def forward(self, x):
        y = self.head(self.features(x)).sigmoid().flatten(2)
        return y if self.transposed else y.permute(0, 2, 1)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.manual_seed(2)
    net, x = Detector().eval(), torch.rand(3, 3, 32, 32)
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    export(net, x, path)
    return net, x, Explainer(path, device="cpu")


BOX, KIND = 37, 1


def _box_score(net, box=BOX, cls=KIND):
    return lambda x: net(x)[:, box, 4] * net(x)[:, box, 5 + cls]


def test_a_box_score_with_objectness_matches_torch_captum_and_grad_cam(detector, monkeypatch):
    net, x, explainer = detector
    target = Target(KIND, box=BOX, objectness=True)
    xg = x.clone().requires_grad_()
    _box_score(net)(xg).sum().backward()
    got = explainer.explain(x.numpy(), "gradient", target)
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4 and got.target.tolist() == [KIND] * 3
    assert got.params["target"] == f"box={BOX},objectness"
    exact = _box_score(copy.deepcopy(net).double())  # the product is recomputed at every step of the path
    want = captum_attr.IntegratedGradients(exact).attribute(x.double(), n_steps=8, method="gausslegendre")
    assert _rel(explainer.explain(x.numpy(), "integrated_gradients", target, steps=8).attribution, want.numpy()) <= 1e-4
    want = captum_attr.Occlusion(_box_score(net)).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))
    got = explainer.explain(x.numpy(), "occlusion", target, window=8, stride=8, score="logit")
    assert _rel(got.attribution, want.numpy()) <= 1e-4
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    net = copy.deepcopy(net)
    with gradcam_lib.GradCAM(model=net, target_layers=[net.features[-1]]) as cam:
        want = cam(input_tensor=x.clone(), targets=[lambda out: out[BOX, 4] * out[BOX, 5 + KIND]] * len(x))
    layer = [c.name for c in explainer.engine.layers() if "features" in c.name][-1]
    assert _rel(explainer.explain(x.numpy(), "gradcam", target, layer=layer).layer_map, want) <= 1e-4


def test_a_transposed_detector_box_and_its_default_class(tmp_path):
    torch.manual_seed(3)
    net, x = Detector(transposed=True).eval(), torch.rand(2, 3, 32, 32)
    export(net, x, tmp_path / "v8.onnx")
    explainer = Explainer(tmp_path / "v8.onnx", device="cpu")
    with torch.no_grad():
        predicted = net(x)[:, 4:, 5].argmax(dim=1)
    xg = x.clone().requires_grad_()
    net(xg)[torch.arange(2), 4 + predicted, 5].sum().backward()
    got = explainer.explain(x.numpy(), "lrp", "box=5", preset="epsilon", epsilon=1e-9)
    assert got.target.tolist() == predicted.tolist()
    got = explainer.explain(x.numpy(), "gradient", "box=5")
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4
    with pytest.raises(TargetError, match=r"box=64 on output 'y' \[N, 7, 64\]: 64 boxes of 7 features"):
        explainer.explain(x.numpy(), "gradient", "box=64")


def test_metrics_of_a_box_score_the_box(detector):
    from onnxlens.evaluation import evaluate

    net, x, explainer = detector
    result = evaluate(explainer.engine, x.numpy(), ["gradient"], ["deletion", "max_sensitivity"],
                      target=Target(KIND, box=BOX, objectness=True), baselines=["spectral_residual"],
                      params={"max_sensitivity": {"samples": 2}})
    with torch.no_grad():
        score = _box_score(net)(x).numpy()
    for label in ("gradient", "baseline:spectral_residual"):
        curve = result["metrics"]["deletion"]["results"][label]
        curves = np.array(curve["curves"])
        np.testing.assert_allclose(curves[:, 0], score, rtol=1e-5)  # nothing deleted: the box's own score
        assert ((curves.min(axis=1) <= curve["per_image"]) & (curve["per_image"] <= curves.max(axis=1))).all()
    assert all(np.isfinite(result["metrics"]["max_sensitivity"]["results"]["gradient"]["per_image"]))


def test_a_region_target_is_the_ground_truth_of_localization(segmenter):
    from onnxlens.evaluation import evaluate

    _, x, explainer, mask, _ = segmenter
    metrics = ["pointing_game", "relevance_mass"]
    e = explainer.explain(x.numpy(), "gradient", Target(CATEGORY, region=mask))
    own = evaluate(explainer.engine, x.numpy(), [e], metrics, baselines=[])
    given = evaluate(explainer.engine, x.numpy(), [e], metrics, masks=np.repeat(mask[None] > 0, len(x), 0), baselines=[])
    for name in metrics:
        got, want = (r["metrics"][name]["results"]["gradient"]["per_image"] for r in (own, given))
        assert got == want, name
    plain = explainer.explain(x.numpy(), "gradient", CATEGORY)  # the whole map: no region to point at
    with pytest.raises(Exception, match="needs masks or boxes .or a region target."):
        evaluate(explainer.engine, x.numpy(), [plain], metrics, baselines=[])


def test_match_explains_each_row_for_its_best_overlapping_box(detector):
    net, x, explainer = detector
    with torch.no_grad():
        out = net(x).numpy().astype(np.float64)
    cx, cy, w, h = (out[..., i] for i in range(4))
    x0, y0, x1, y1 = 0.2, 0.3, 0.6, 0.7
    overlap = (np.clip(np.minimum(cx + w / 2, x1) - np.maximum(cx - w / 2, x0), 0, None)
               * np.clip(np.minimum(cy + h / 2, y1) - np.maximum(cy - h / 2, y0), 0, None))
    iou = overlap / (w * h + (x1 - x0) * (y1 - y0) - overlap)
    top = out[..., 5:].argmax(axis=2)
    kind = int(np.bincount(top.ravel()).argmax())  # a class boxes of every row are sure of
    iou[top != kind] = -1
    want = iou.argmax(axis=1)
    e = explainer.explain(x.numpy(), "gradient", f"class={kind},match={x0},{y0},{x1},{y1},objectness")
    np.testing.assert_array_equal(e.diagnostics["box"], want)
    assert e.params["target"] == f"objectness,match={x0:g},{y0:g},{x1:g},{y1:g}" and e.target.tolist() == [kind] * 3
    for i, box in enumerate(want):
        alone = explainer.explain(x.numpy()[i:i + 1], "gradient", Target(kind, box=int(box), objectness=True))
        np.testing.assert_allclose(e.attribution[i], alone.attribution[0], rtol=1e-5, atol=1e-8)
    with pytest.raises(TargetError, match=f"no box of class {kind} overlaps match=5,5,6,6"):
        explainer.explain(x.numpy(), "gradient", f"class={kind},match=5,5,6,6,objectness")
