"""Box targets on a detector that runs NonMaxSuppression itself and returns the kept boxes,
scores and labels as separate outputs (SSD- and torchvision-style exports): the explained number
is the kept box's score before NMS, against torch autograd and Captum on the same head."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
from torch import nn  # noqa: E402

from onnxlens import Explainer  # noqa: E402
from onnxlens.evaluation import evaluate  # noqa: E402
from onnxlens.methods.targets import TargetError  # noqa: E402

SIZE, CLASSES, GRID = 32, 3, 8


class Head(nn.Module):
    """A one-stage head: per cell of an 8×8 grid one box (corners y0, x0, y1, x1 around the
    cell's centre, as NonMaxSuppression reads them) and per-class sigmoid scores [N, C, B]."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.extent = nn.Conv2d(8, 2, 3, padding=1, stride=4)
        self.classify = nn.Conv2d(8, CLASSES, 3, padding=1, stride=4)
        ys, xs = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        self.register_buffer("centres", torch.stack([ys, xs]).reshape(2, -1).float() * 4 + 2)

    def forward(self, x):
        f = self.features(x)
        half = torch.sigmoid(self.extent(f)).flatten(2) * 8  # [N, 2, B]
        corners = torch.cat([self.centres - half, self.centres + half], dim=1)  # y0, x0, y1, x1
        return corners.permute(0, 2, 1), torch.sigmoid(self.classify(f)).flatten(2)


def _with_nms(head_path, path):
    """The head's ONNX graph followed by NonMaxSuppression and the gathers of an exported
    detector: outputs boxes [1, K, 4], scores [1, K] and labels [1, K] (int64)."""
    model = onnx.load(head_path)
    graph = model.graph
    constants = {"max_out": np.array([4], np.int64), "iou": np.array([0.3], np.float32),
                 "threshold": np.array([0.05], np.float32), "column_box": np.array([2], np.int64),
                 "column_class": np.array([1], np.int64), "zero": np.array([0], np.int64)}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    graph.node.extend([
        helper.make_node("NonMaxSuppression", ["boxes_all", "scores_all", "max_out", "iou", "threshold"], ["kept"]),
        helper.make_node("Gather", ["kept", "column_box"], ["box_index"], axis=1),
        helper.make_node("Squeeze", ["box_index", "column_class"], ["box_flat"]),
        helper.make_node("Gather", ["kept", "column_class"], ["class_index"], axis=1),
        helper.make_node("Squeeze", ["class_index", "column_class"], ["class_flat"]),
        helper.make_node("Gather", ["boxes_all", "box_flat"], ["boxes"], axis=1),
        helper.make_node("GatherND", ["scores_all", "kept"], ["scores_flat"]),
        helper.make_node("Unsqueeze", ["scores_flat", "zero"], ["scores"]),
        helper.make_node("Unsqueeze", ["class_flat", "zero"], ["labels"])])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1, "K", 4]),
                         helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, "K"]),
                         helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, [1, "K"])])
    onnx.save(model, path)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.manual_seed(3)
    head = Head().eval()
    folder = tmp_path_factory.mktemp("nms")
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.onnx.export(head, (x[:1],), str(folder / "head.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["boxes_all", "scores_all"])
    _with_nms(folder / "head.onnx", folder / "det.onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "det.onnx"))
    kept = [dict(zip(("boxes", "scores", "labels"), session.run(None, {"x": row[None].numpy()}))) for row in x]
    return head, x, Explainer(folder / "det.onnx", device="cpu"), kept


def _candidate(head, x, kept, box, cls=None):
    """Per row, (class, box) of the candidate whose score row's output detection ``box`` holds."""
    with torch.no_grad():
        _, scores = head(x)
    picked = []
    for n, out in enumerate(kept):
        c = int(out["labels"][0, box])
        j = int(np.argmin(np.abs(scores[n, c].numpy() - out["scores"][0, box])))
        picked.append((c if cls is None else cls, j))
    return picked


def _score(head, picked):
    """The candidates' scores before NMS; rows of a longer batch (Captum's IG steps) repeat the
    batch's rows."""
    classes, boxes = (torch.tensor(v) for v in zip(*picked))

    def score(t):
        rows = torch.arange(len(t))
        return head(t)[1][rows, classes[rows % len(picked)], boxes[rows % len(picked)]]

    return score


def _rel(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("spec, box, cls", [("box=0", 0, None), ("box=2", 2, None), ("box=1,class=2", 1, 2)])
def test_a_kept_box_is_its_score_before_nms(detector, spec, box, cls):
    head, x, explainer, kept = detector
    picked = _candidate(head, x, kept, box, cls)
    score = _score(head, picked)
    xg = x.clone().requires_grad_()
    score(xg).sum().backward()
    got = explainer.explain(x.numpy(), "gradient", spec, abs=False)
    assert _rel(got.attribution, xg.grad.numpy()) <= 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(got.score, score(x).numpy(), rtol=1e-5)
    if cls is None:  # the kept score itself
        np.testing.assert_allclose(got.score, [out["scores"][0, box] for out in kept], rtol=1e-5)
    assert got.target.tolist() == [c * GRID * GRID + j for c, j in picked]
    want = captum_attr.IntegratedGradients(score).attribute(x, n_steps=16, method="gausslegendre")
    got = explainer.explain(x.numpy(), "integrated_gradients", spec, steps=16)
    assert _rel(got.attribution, want.numpy()) <= 1e-4
    want = captum_attr.Occlusion(score).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0.0)
    got = explainer.explain(x.numpy(), "occlusion", spec, window=8, stride=8, fill=0.0, score="logit")
    assert _rel(got.attribution, want.numpy()) <= 1e-4


def _iou(a, b):
    y0, x0, y1, x1 = a
    bx0, by0, bx1, by1 = b
    overlap = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
    return overlap / ((x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - overlap)


def test_match_picks_the_kept_box_of_highest_iou(detector):
    head, x, explainer, kept = detector
    match = (4.0, 4.0, 20.0, 20.0)
    got = explainer.explain(x.numpy(), "gradient", "match=4,4,20,20", abs=False)
    for n, out in enumerate(kept):
        best = int(np.argmax([_iou(b, match) for b in out["boxes"][0]]))
        alone = explainer.explain(x[n:n + 1].numpy(), "gradient", f"box={best}", abs=False)
        np.testing.assert_allclose(got.attribution[n:n + 1], alone.attribution, rtol=1e-6)
        assert got.target[n] == alone.target[0]


def test_metrics_score_the_kept_box(detector):
    head, x, explainer, kept = detector
    for spec in ("box=0", "match=4,4,20,20"):
        e = explainer.explain(x.numpy(), "gradient", spec)
        result = evaluate(explainer.engine, x.numpy(), [e], ["deletion", "max_sensitivity"], baselines=[],
                          params={"max_sensitivity": {"samples": 2}})
        for name in ("deletion", "max_sensitivity"):
            assert np.isfinite(result["metrics"][name]["results"]["gradient"]["per_image"]).all(), (spec, name)
    picked = _candidate(head, x, kept, 0)
    with torch.no_grad():  # deletion's first point: the kept box's probability on the whole input
        first = _score(head, picked)(x).numpy()
    curve = evaluate(explainer.engine, x.numpy(), [explainer.explain(x.numpy(), "gradient", "box=0")], ["deletion"],
                     baselines=[])["metrics"]["deletion"]["results"]["gradient"]
    assert curve["per_image"][0] <= first[0]


@pytest.mark.parametrize("spec, message", [
    ("box=12", r"box=12: row 0 keeps 12 box\(es\) in output 'scores'"),
    ("box=0,output=labels", r"output 'labels' is \[1, 12\] int64: give output=NAME of the scores"),
    ("match=100,100,120,120", "no box that NonMaxSuppression kept overlaps match=100,100,120,120"),
])
def test_box_errors_on_a_detector_with_nms(detector, spec, message):
    with pytest.raises(TargetError, match=message):
        detector[2].explain(detector[1].numpy(), "gradient", spec)
