"""Graphs with a symbolic image size, and graphs that run only at one batch size: every method
works on them unchanged."""

import json

import numpy as np
import pytest
from onnx import helper

from builders import f32, i64, make_model, vi
from onnxlens import Explainer, import_model
from onnxlens.methods import METHODS

CHEAP = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2}, "smoothgrad_squared": {"samples": 2},
         "vargrad": {"samples": 2}, "rise": {"masks": 16}, "lime": {"samples": 16},
         "meaningful_perturbation": {"iterations": 3}, "mc_dropout": {"samples": 2}}


def _pool_classifier(batch, reshape_batch=None, classes=3):
    """Conv → Relu → GlobalAveragePool → Reshape → Gemm over a ``batch``×2×6×6 input; the
    Reshape's target bakes in ``reshape_batch`` rows when given (as exporters that trace one
    batch size write it), else -1. The weights are the same on every call."""
    rng = np.random.default_rng(7)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    weights = [("w", w(4, 2, 3, 3)), ("b", w(4)), ("shape", i64([reshape_batch or -1, 4])),
               ("fc_w", w(classes, 4)), ("fc_b", w(classes))]
    return make_model(nodes, [vi("x", [batch, 2, 6, 6])], [vi("y", [batch, classes])], weights)


def _free_batch_gradient(x, target):
    """The reference: the same weights with a -1 Reshape, explained at any batch size."""
    return Explainer(_pool_classifier("N").SerializeToString(), device="cpu").explain(x, "gradient", target).attribution


def test_a_graph_that_fails_at_batch_two_is_fed_one_row_at_a_time(save):
    model = _pool_classifier("N", reshape_batch=1)
    imported = import_model(save(model))
    assert imported.fixed_batch == 1 and imported.batch_rows == 1
    assert "fails at batch 2" in imported.batch_note
    x = np.random.default_rng(0).random((3, 2, 6, 6), dtype=np.float32)
    explainer = Explainer(imported, device="cpu")
    e = explainer.explain(x, "gradient", target=[0, 1, 2])
    np.testing.assert_allclose(e.attribution, _free_batch_gradient(x, [0, 1, 2]), rtol=1e-5, atol=1e-7)
    assert explainer.explain(x, "occlusion", window=3).attribution.shape == x.shape


def test_a_model_that_declares_batch_four_explains_any_number_of_rows(save):
    model = _pool_classifier(4)
    imported = import_model(save(model))
    assert imported.batch_rows == 4 and imported.fixed_batch is None
    x = np.random.default_rng(1).random((5, 2, 6, 6), dtype=np.float32)
    explainer = Explainer(imported, device="cpu")
    e = explainer.explain(x, "gradient", target=[0, 1, 2, 0, 1])
    np.testing.assert_allclose(e.attribution, _free_batch_gradient(x, [0, 1, 2, 0, 1]), rtol=1e-5, atol=1e-7)
    for method, params in (("gradcam", {}), ("lrp", {}), ("occlusion", {"window": 3})):
        assert np.isfinite(explainer.explain(x[:1], method, **params).heatmap).all()


def test_inspect_reports_the_accepted_batch(save, cli):
    result = cli("inspect", save(_pool_classifier("N", reshape_batch=1)), "--json")
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)["batch"]
    assert batch["accepted"] == "1" and "fails at batch 2" in batch["note"]


def test_a_batch_folded_into_axis_zero_is_a_multiple_of_the_batch(save):
    """A patch unfold (N×4×4×4 → 4N×4×2×2, as MobileViT does) keeps its factor: the tensor is
    ``4*N``, not the batch itself, and the gradient through it is exact."""
    nodes = [
        helper.make_node("Reshape", ["x", "patches"], ["u"], name="unfold"),
        helper.make_node("Relu", ["u"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "rows"], ["f"], name="fold"),
        helper.make_node("Gemm", ["f", "fc_w"], ["y"], name="fc", transB=1),
    ]
    fc_w = f32(3, 64)
    weights = [("patches", i64([-1, 4, 2, 2])), ("rows", i64([-1, 64])), ("fc_w", fc_w)]
    model = make_model(nodes, [vi("x", ["N", 4, 4, 4])], [vi("y", ["N", 3])], weights)
    imported = import_model(save(model))
    assert imported.measured_shapes["u"] == ("4*N", 4, 2, 2)
    x = np.random.default_rng(2).standard_normal((2, 4, 4, 4)).astype(np.float32)
    e = Explainer(imported, device="cpu").explain(x, "gradient", target=[0, 2])
    want = fc_w[[0, 2]].reshape(x.shape) * (x > 0)  # y = W · relu(x) flattened
    np.testing.assert_allclose(e.attribution, want, rtol=1e-6, atol=1e-7)


SIZES = [(64, 64), (48, 80)]


@pytest.fixture(scope="module")
def dynamic_resnet(tmp_path_factory):
    """A ResNet-18 exported with symbolic batch, height and width (torch: the module and its
    reference gradients)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torch_models import calibrated

    torch.manual_seed(0)
    net = calibrated(torchvision.models.resnet18(num_classes=6), torch.rand(8, 3, 64, 64))
    folder = tmp_path_factory.mktemp("dynamic")
    torch.onnx.export(net, (torch.rand(1, 3, 64, 64),), str(folder / "dynamic.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}})
    return net, folder / "dynamic.onnx", Explainer(folder / "dynamic.onnx", device="cpu")


@pytest.mark.parametrize("size", SIZES)
def test_gradient_at_two_image_sizes_matches_torch(size, dynamic_resnet):
    net, _, explainer = dynamic_resnet
    import torch

    x = np.random.default_rng(3).random((2, 3, *size), dtype=np.float32)
    e = explainer.explain(x, "gradient", target=[1, 4])
    xt = torch.from_numpy(x).double().requires_grad_()
    net.double()(xt)[[0, 1], [1, 4]].sum().backward()
    net.float()
    want = xt.grad.numpy()
    assert np.linalg.norm(e.attribution - want) / np.linalg.norm(want) <= 1e-4


BACKWARD_AND_CAM = sorted(m for m in METHODS if m not in ("occlusion", "rise", "lime", "meaningful_perturbation",
                                                            "attention_rollout", "legrad"))  # a CNN has no attention


@pytest.mark.parametrize("method", BACKWARD_AND_CAM)
def test_every_backward_and_cam_method_at_two_image_sizes(method, dynamic_resnet):
    _, _, explainer = dynamic_resnet
    for size in SIZES:
        x = np.random.default_rng(4).random((2, 3, *size), dtype=np.float32)
        e = explainer.explain(x, method, **CHEAP.get(method, {}))
        assert e.attribution.shape == x.shape and e.heatmap.shape == (2, *size)
        assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0


def test_cam_layers_of_a_dynamic_model_follow_the_input_size(dynamic_resnet, cli):
    _, path, explainer = dynamic_resnet
    e = explainer.explain(np.random.default_rng(5).random((1, 3, 48, 80), dtype=np.float32), "gradcam")
    assert e.layer_map.shape[1:] == (2, 3)  # ResNet-18's last stage at stride 32
    result = cli("inspect", path, "--layers", "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)["layers"]
    assert layers[-1]["default"] and layers[-1]["shape"][2:] == [7, 7]  # at the 224² probe size


def test_cam_methods_on_a_graph_fed_one_row_at_a_time(save):
    explainer = Explainer(save(_pool_classifier("N", reshape_batch=1)), device="cpu")
    x = np.random.default_rng(6).random((2, 2, 6, 6), dtype=np.float32)
    assert [c.name for c in explainer.engine.layers()] == ["c", "r"]
    for method in ("gradcam", "layercam", "lrp"):
        assert np.isfinite(explainer.explain(x, method).heatmap).all()
