"""Attention rollout against vit-explain's recipe (Jacob Gildenblat) on the attention weights
of the same timm and torchvision modules, read by forward hooks; skipped without torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from onnxlens import Explainer  # noqa: E402
from onnxlens.methods.registry import MethodError  # noqa: E402
from torch_models import export  # noqa: E402

SIZE = 64


def _timm_vit(class_token=True):
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=5,
                            class_token=class_token, global_pool="token" if class_token else "avg")
    weights = []
    for block in net.blocks:
        block.attn.fused_attn = False  # the weights exist as a tensor, for the hook to read
        block.attn.attn_drop.register_forward_hook(lambda m, inputs, out: weights.append(inputs[0].detach()))
    return net.eval(), weights


def _rollout(weights, fusion, prefix):
    """vit-explain's rollout, rows renormalized as the paper has them."""
    n, _, t, _ = weights[0].shape
    result = torch.eye(t).expand(n, t, t).double()
    for w in weights:
        fused = getattr(w.double(), fusion)(dim=1)
        fused = fused if fusion == "mean" else fused.values
        a = (fused + torch.eye(t)) / 2
        result = (a / a.sum(dim=-1, keepdim=True)) @ result
    rows = result[:, 0] if prefix else result.mean(dim=1)
    return rows[:, prefix:].reshape(n, 4, 4).numpy()


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("class_token", [True, False])
def test_rollout_matches_vit_explain(fusion, class_token, tmp_path):
    torch.manual_seed(0)
    net, weights = _timm_vit(class_token)
    x = torch.rand(2, 3, SIZE, SIZE)
    export(net, x, tmp_path / "vit.onnx")
    weights.clear()
    with torch.no_grad():
        net(x)
    want = _rollout(weights, fusion, int(class_token))
    got = Explainer(tmp_path / "vit.onnx", device="cpu").explain(x.numpy(), "attention_rollout",
                                                                  head_fusion=fusion)
    assert got.layer_map.shape == (2, 4, 4) and got.heatmap.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(got.layer_map, want, rtol=1e-5, atol=1e-7)


def test_rollout_reads_torchvision_attention(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=16, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    weights = []
    for layer in net.encoder.layers:  # torchvision asks its attention for no weights: ask for them per head
        attention = layer.self_attention
        forward = attention.forward
        attention.forward = lambda q, k, v, need_weights, forward=forward: (
            lambda out: (weights.append(out[1].detach()), out)[1])(
            forward(q, k, v, need_weights=True, average_attn_weights=False))
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        net(x)
    want = _rollout(weights, "mean", 1)
    for layer in net.encoder.layers:
        del layer.self_attention.forward
    export(net, x, tmp_path / "vit.onnx")
    got = Explainer(tmp_path / "vit.onnx", device="cpu").explain(x.numpy(), "attention_rollout")
    np.testing.assert_allclose(got.layer_map, want, rtol=1e-5, atol=1e-7)


def test_rollout_needs_attention(digits):
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    with pytest.raises(MethodError, match="no attention weights"):
        digits.explain(x, "attention_rollout")
    with pytest.raises(MethodError, match="head_fusion must be one of mean, max, min"):
        digits.explain(x, "attention_rollout", head_fusion="sum")


@pytest.mark.parametrize("class_token", [True, False])
def test_legrad_matches_torch_autograd(class_token, tmp_path):
    torch.manual_seed(0)
    net, _ = _timm_vit(class_token)
    x = torch.rand(2, 3, SIZE, SIZE)
    export(net, x, tmp_path / "vit.onnx")
    weights = []

    def keep(module, inputs, out):  # each block's attention weights, and their gradient
        inputs[0].retain_grad()
        weights.append(inputs[0])

    for block in net.blocks:
        block.attn.attn_drop.register_forward_hook(keep)
    target = [1, 3]
    net(x)[[0, 1], target].sum().backward()
    prefix = int(class_token)
    want = torch.stack([w.grad.double().clamp(min=0).mean(dim=(1, 2))[:, prefix:] for w in weights]).mean(dim=0)
    got = Explainer(tmp_path / "vit.onnx", device="cpu").explain(x.numpy(), "legrad", target=target)
    assert got.layer_map.shape == (2, 4, 4)
    np.testing.assert_allclose(got.layer_map, want.reshape(2, 4, 4).numpy(), rtol=1e-4, atol=1e-7)


def test_windowed_attention_is_refused(tmp_path):
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    net = SwinTransformer(img_size=96, patch_size=8, window_size=6, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                          num_classes=5).eval()
    x = torch.rand(1, 3, 96, 96)
    export(net, x, tmp_path / "swin.onnx")
    explainer = Explainer(tmp_path / "swin.onnx", device="cpu")
    for method in ("attention_rollout", "legrad"):
        with pytest.raises(MethodError, match="attends within windows"):
            explainer.explain(x.numpy(), method)
