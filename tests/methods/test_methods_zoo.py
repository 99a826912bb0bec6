"""Every registered method on exported torchvision models, through the API and the CLI
(skipped where torch is absent)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from onnxlens import Explainer  # noqa: E402
from onnxlens.graph_ops.backward.relevance import PRESETS  # noqa: E402
from torch_models import calibrated, export  # noqa: E402
from onnxlens.methods import METHODS  # noqa: E402
from onnxlens.methods.registry import MethodError  # noqa: E402

ZOO = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=6),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=6, width_mult=0.35),
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(num_classes=6),
}
TRANSFORMER_ONLY = {"attention_rollout", "legrad"}  # a CNN has no attention weights: a clear refusal
QUICK = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2}, "smoothgrad_squared": {"samples": 2},
         "vargrad": {"samples": 2}, "meaningful_perturbation": {"iterations": 20}, "rise": {"masks": 200},
         "lime": {"samples": 200}}


@pytest.fixture(scope="module", params=list(ZOO))
def zoo_model(request, tmp_path_factory):
    torch.manual_seed(0)
    net = calibrated(ZOO[request.param](), torch.rand(8, 3, 96, 96))
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    export(net, torch.rand(1, 3, 96, 96), path)
    return path, Explainer(path, device="cpu")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_on_zoo_model(method, zoo_model):
    _, explainer = zoo_model
    x = np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32)
    if method in TRANSFORMER_ONLY:
        with pytest.raises(MethodError, match="no attention weights"):
            explainer.explain(x, method)
        return
    e = explainer.explain(x, method, **QUICK.get(method, {}))
    assert e.attribution.shape == x.shape and e.heatmap.shape == (2, 96, 96)
    assert np.isfinite(e.attribution).all() and np.isfinite(e.heatmap).all()


@pytest.mark.parametrize("method", ["gradient", "gradcam", "deeplift", *(f"lrp:{p}" for p in PRESETS)])
def test_cli_on_zoo_model(method, zoo_model, tmp_path, cli):
    path, _ = zoo_model
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 3, 96, 96), dtype=np.float32))
    method, _, preset = method.partition(":")
    params = ["--param", f"preset={preset}"] if preset else []
    result = cli("explain", path, "--input", tmp_path / "x.npy", "--method", method, *params, "--out", tmp_path / "o.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.png").stat().st_size > 0


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_deeplift_summation_to_delta_on_zoo_model(rule, zoo_model):
    _, explainer = zoo_model
    x = np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32)
    e = explainer.explain(x, "deeplift", rule=rule, baseline="blur")
    delta = e.score - e.diagnostics["baseline_score"]
    assert (np.abs(delta) > 1e-3).all()  # a change worth explaining
    assert (e.diagnostics["summation_gap"] <= 1e-4 * np.abs(delta)).all(), (e.diagnostics, delta)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_lrp_preset_on_zoo_model(preset, zoo_model):
    _, explainer = zoo_model
    x = np.random.default_rng(2).random((2, 3, 96, 96), dtype=np.float32)
    e = explainer.explain(x, "lrp", preset=preset)
    assert np.isfinite(e.attribution).all() and e.attribution.shape == x.shape
