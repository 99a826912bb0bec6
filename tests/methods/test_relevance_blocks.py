"""LRP through the blocks modern networks are made of — SiLU and GELU gates, squeeze-excitation,
HardSwish, LayerNorm (fused and decomposed) — against AttnLRP's Gradient×Input recipe as
``lxt`` writes it (Achtibat et al., 2024): activations keep the identity rule through a
gradient of f(x)/x, gates and the LayerNorm deviation are detached, so x · ∂score/∂x of the
rewritten torch module is the ε→0 relevance. Skipped without torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from onnxlens import Explainer  # noqa: E402
from torch_models import export  # noqa: E402


def _identity(f, x):
    """f(x) forward; the gradient f(x)/x, so relevance passes unchanged (lxt's
    ``identity_rule_implicit``)."""
    y = f(x)
    return x * (y / x).detach()


class Blocks(nn.Module):
    """Bias-free: conv → SiLU → squeeze-excitation → channels-last LayerNorm → GELU →
    HardSwish → a second product of two independent branches → mean → linear."""

    def __init__(self, channels=8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.squeeze = nn.Conv2d(channels, 4, 1, bias=False)
        self.excite = nn.Conv2d(4, channels, 1, bias=False)
        self.norm = nn.LayerNorm(channels, bias=False)
        self.left = nn.Conv2d(channels, channels, 1, bias=False)
        self.right = nn.Conv2d(channels, channels, 1, bias=False)
        self.head = nn.Linear(channels, 5, bias=False)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
        self.relevance = False

    def _act(self, f, x):
        return _identity(f, x) if self.relevance else f(x)

    def forward(self, x):
        x = self._act(nn.functional.silu, self.conv(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = x * (gate.detach() if self.relevance else gate)
        x = x.permute(0, 2, 3, 1)
        if self.relevance:  # the deviation held constant, the centering linear (lxt's layer_norm_forward)
            centered = x - x.mean(-1, keepdim=True)
            x = centered / (centered.pow(2).mean(-1, keepdim=True) + self.norm.eps).sqrt().detach() * self.norm.weight
        else:
            x = self.norm(x)
        x = self._act(nn.functional.gelu, x.permute(0, 3, 1, 2))
        x = self._act(nn.functional.hardswish, x)
        product = self.left(x) * self.right(x)  # AttnLRP's uniform rule: half to each factor
        x = (product * 0.5 + product.detach() * 0.5) if self.relevance else product
        return self.head(x.mean((2, 3)))


def _reference(net, x, target):
    net.relevance = True
    xt = torch.from_numpy(x).double().requires_grad_()
    net.double()(xt)[np.arange(len(x)), target].sum().backward()
    net.relevance = False
    net.float()
    return (xt * xt.grad).detach().numpy()


@pytest.mark.parametrize("opset", [17, 14])  # LayerNormalization fused, and decomposed into Sub/Div
def test_relevance_of_modern_blocks_matches_the_lxt_recipe(opset, tmp_path):
    torch.manual_seed(0)
    net = Blocks().eval()
    x = np.random.default_rng(0).random((2, 3, 12, 12), dtype=np.float32)
    export(net, torch.from_numpy(x), tmp_path / "blocks.onnx", opset=opset)
    e = Explainer(tmp_path / "blocks.onnx", device="cpu").explain(x, "lrp", preset="epsilon", epsilon=1e-9,
                                                                  stabilizer=1e-9)
    want = _reference(net, x, e.target)
    assert not e.warnings
    np.testing.assert_allclose(e.attribution.reshape(2, -1).sum(1), e.score, rtol=1e-3)
    rel = np.linalg.norm(e.attribution - want) / np.linalg.norm(want)
    assert rel < 1e-3, rel



def _vit():
    """A small torchvision ViT; the position embedding and class token are zero, so the
    constants that the ONNX graph adds or concatenates carry no share of the score (the
    recipe's x · ∂score/∂x gives constants their share, LRP here passes a constant add's
    relevance to its variable side)."""
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=5)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
        net.encoder.pos_embedding.zero_()
        net.class_token.zero_()
    return net.eval()


def _lxt_vit_relevance(net, x, target):
    """lxt's CP-LRP patches for torchvision's ViT (``lxt.efficient.models.vit_torch``): GELU by
    the identity rule, LayerNorm with its deviation detached, attention with queries and keys
    detached; relevance x · ∂score/∂x in float64."""
    def gelu(module, inp):
        return _identity(module.__class__.forward.__get__(module), inp)

    def layer_norm(module, inp):
        centered = inp - inp.mean(-1, keepdim=True)
        std = (centered.pow(2).mean(-1, keepdim=True) + module.eps).sqrt()
        return centered / std.detach() * module.weight + module.bias

    def attention(module, query, key, value, **kwargs):
        return module.__class__.forward(module, query.detach(), key.detach(), value, **kwargs)

    patched = []
    for module in net.modules():
        for kind, fn in ((nn.GELU, gelu), (nn.LayerNorm, layer_norm), (nn.MultiheadAttention, attention)):
            if isinstance(module, kind):
                module.forward = fn.__get__(module)
                patched.append(module)
    try:
        xt = torch.from_numpy(x).double().requires_grad_()
        net.double()(xt)[np.arange(len(x)), target].sum().backward()
        return (xt * xt.grad).detach().numpy()
    finally:
        for module in patched:
            del module.forward
        net.float()


def test_vit_relevance_matches_lxt_cp_lrp(tmp_path):
    torch.manual_seed(0)
    net = _vit()
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    export(net, torch.from_numpy(x), tmp_path / "vit.onnx")
    e = Explainer(tmp_path / "vit.onnx", device="cpu").explain(x, "lrp", preset="epsilon", epsilon=1e-9,
                                                               stabilizer=1e-9)
    want = _lxt_vit_relevance(net, x, e.target)
    np.testing.assert_allclose(want.reshape(2, -1).sum(1), e.attribution.reshape(2, -1).sum(1), rtol=1e-3)
    rel = np.linalg.norm(e.attribution - want) / np.linalg.norm(want)
    assert rel < 1e-3, rel


def test_vit_layer_relevance_on_batch_second_tokens(tmp_path):
    """torchvision's encoder keeps tokens [T, N, D]: the chosen layer's relevance is laid on the
    patch grid and its conservation gap read per input."""
    torch.manual_seed(0)
    net = _vit()
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    export(net, torch.from_numpy(x), tmp_path / "vit.onnx")
    explainer = Explainer(tmp_path / "vit.onnx", device="cpu")
    tokens = [c for c in explainer.engine.layers() if c.layout.batch_axis == 1]
    assert tokens
    e = explainer.explain(x, "lrp", preset="epsilon", layer=tokens[-1].name)
    assert e.layer_map.shape == (2, 4, 4)
    assert e.diagnostics["conservation_gap"][tokens[-1].name].shape == (2,)


def test_efficientnet_relevance_is_conserved_without_biases(tmp_path):
    """EfficientNet-B0 (timm, random weights, BatchNorm statistics measured): its folded
    BatchNorm shifts absorb most relevance under the default composite (Σ/score below 0.5),
    which warns; leaving biases out of z (Zennit's zero_params='bias') keeps 0.89–0.92 of it
    here (0.95–0.99 at 96²): relevance left at neurons that only their bias turns on is lost."""
    timm = pytest.importorskip("timm")
    from torch_models import calibrated

    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    net = calibrated(timm.create_model("efficientnet_b0", num_classes=10), torch.rand(16, 3, 64, 64))
    export(net, x, tmp_path / "effnet.onnx")
    explainer = Explainer(tmp_path / "effnet.onnx", device="cpu")
    default = explainer.explain(x.numpy(), "lrp")
    assert (default.diagnostics["relevance_ratio"] < 0.5).all() and "zero_bias=true" in default.warnings[0]
    kept = explainer.explain(x.numpy(), "lrp", zero_bias=True)
    assert ((kept.diagnostics["relevance_ratio"] > 0.8) & (kept.diagnostics["relevance_ratio"] < 1.2)).all()
    assert not kept.warnings
