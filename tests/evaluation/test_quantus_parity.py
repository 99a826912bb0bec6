"""Metrics against Quantus on the same torch module, exported in the test (skipped where torch
or Quantus is absent). Quantus runs the torch module; onnxlens runs the exported ONNX file."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")
from torch import nn  # noqa: E402

from onnxlens import Explainer  # noqa: E402
from onnxlens.evaluation.registry import EvalContext, run_metric  # noqa: E402
from torch_models import export  # noqa: E402

SIZE = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.rand(5, 1, SIZE, SIZE)
    path = tmp_path_factory.mktemp("quantus") / "m.onnx"
    export(net, x, path)
    explainer = Explainer(path, device="cpu")
    xs = x.numpy()
    e = explainer.explain(xs, "gradient", abs=False)
    masks = np.zeros((5, SIZE, SIZE), bool)
    for i in range(5):
        masks[i, i:i + 6, 2 * i:2 * i + 5] = True
    return net, xs, e, EvalContext(explainer.engine, xs, masks)


def _quantus(metric, net, x, e, **kw):
    return np.asarray(metric(model=net, x_batch=x, y_batch=e.target, a_batch=e.heatmap[:, None], device="cpu",
                             channel_first=True, **kw), dtype=np.float64)


def test_pixel_flipping_curve(setup):
    net, x, e, ctx = setup
    want = _quantus(quantus.PixelFlipping(features_in_step=16, perturb_baseline="black", disable_warnings=True),
                    net, x, e)
    got = run_metric("pixel_flipping", ctx, e, steps=SIZE * SIZE // 16, substrate_kind="black")
    np.testing.assert_allclose(np.asarray(got["curves"])[:, 1:], want, rtol=1e-4, atol=1e-6)


def test_relevance_mass_accuracy(setup):
    net, x, e, ctx = setup
    want = _quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), net, x, e, s_batch=ctx.masks[:, None])
    got = run_metric("relevance_mass", ctx, e, positive_only=False)["per_image"]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_pointing_game(setup):
    net, x, e, ctx = setup
    want = _quantus(quantus.PointingGame(disable_warnings=True), net, x, e, s_batch=ctx.masks[:, None])
    np.testing.assert_array_equal(run_metric("pointing_game", ctx, e)["per_image_strict"], want)


def test_max_sensitivity_with_a_fixed_noise_array(setup):
    net, x, e, ctx = setup
    samples, radius = 3, 0.2
    noise = np.random.default_rng(ctx.seed).uniform(-radius, radius, (samples, *x.shape)).astype(np.float32)
    draws = itertools.count()

    def perturb(arr, indices, **_):
        return arr + noise[next(draws)].reshape(len(arr), -1)

    def gradient(model, inputs, targets, **_):
        inputs = torch.as_tensor(inputs).requires_grad_(True)
        model(inputs)[torch.arange(len(inputs)), torch.as_tensor(targets)].sum().backward()
        return inputs.grad.numpy()

    metric = quantus.MaxSensitivity(nr_samples=samples, perturb_func=perturb, disable_warnings=True)
    want = np.asarray(metric(model=net, x_batch=x, y_batch=e.target, a_batch=e.attribution, device="cpu",
                             explain_func=gradient, channel_first=True), dtype=np.float64)
    got = run_metric("max_sensitivity", ctx, e, radius=radius, samples=samples)["per_image"]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_mprt_with_quantus_randomized_weights(setup, monkeypatch):
    """Quantus's MPRT (seed 42, top-down cascade) against model_randomization given the very
    weights Quantus drew (its reset_parameters under torch's generator cannot be redrawn in
    numpy): the layer order, the cascade and the similarity (Spearman of |map|) must agree."""
    from onnx import numpy_helper
    from quantus.helpers.model.pytorch_model import PyTorchModel

    import onnxlens.evaluation.sanity as sanity

    net, x, e, ctx = setup
    steps = [{k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
             for _, model in PyTorchModel(net, channel_first=True).get_random_layer_generator("top_down", 42)]
    calls = itertools.count()

    def quantus_weights(model, parameters, seed=0):
        out = model.__class__()
        out.CopyFrom(model)
        values = steps[next(calls)]
        for tensor in out.graph.initializer:
            if tensor.name in values:
                tensor.CopyFrom(numpy_helper.from_array(values[tensor.name].astype(np.float32), tensor.name))
        return out

    def abs_gradient(model, inputs, targets, **_):
        inputs = torch.as_tensor(inputs).requires_grad_(True)
        model(inputs)[torch.arange(len(inputs)), torch.as_tensor(targets)].sum().backward()
        return inputs.grad.abs().numpy()

    want = quantus.MPRT(seed=42, disable_warnings=True)(model=net, x_batch=x, y_batch=e.target,
                                                        a_batch=np.abs(e.attribution), explain_func=abs_gradient,
                                                        device="cpu", channel_first=True)
    monkeypatch.setattr(sanity, "randomize", quantus_weights)
    got = run_metric("model_randomization", ctx, e)
    assert [name for name in want if name != "original"] == ["7", "3", "0"] and len(got["layers"]) == 3
    for k, layer in enumerate(["7", "3", "0"]):
        np.testing.assert_allclose(got["spearman_abs_per_image"][k], want[layer], rtol=1e-4, atol=1e-5)
