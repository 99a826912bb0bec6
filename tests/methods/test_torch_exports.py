"""Real exporter output: torch's TorchScript exporter at opsets 11, 13, 17 and its dynamo
exporter (external .onnx.data); skipped where torch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxlens import import_model  # noqa: E402
from onnxlens.runtime import SessionConfig, create_session  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.LeakyReLU(0.1), nn.Dropout(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.body(x)
        return torch.softmax(self.fc(h), dim=1), h.unsqueeze(-1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.body[1].running_mean.uniform_(-1, 1)
        model.body[1].running_var.uniform_(0.5, 2)
    return model


def _check(path, net):
    imported = import_model(path)
    x = np.random.default_rng(0).random((2, 3, 11, 11), dtype=np.float32)
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x))]
    got = create_session(imported.model, SessionConfig(device="cpu")).run({imported.spec.image_input.name: x})
    for w, g in zip(want, got.values()):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert imported.spec.output().activation == "Softmax"
    assert imported.spec.image_input.layout == "NCHW"
    return imported


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torchscript_export(opset, net, tmp_path):
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 11, 11),), str(path), dynamo=False, opset_version=opset,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    imported = _check(path, net)
    assert imported.original_opset == opset


def test_dynamo_export_with_external_data(net, tmp_path):
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 11, 11),), str(path), dynamo=True, external_data=True,
                      dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=64)}})
    assert (tmp_path / "net.onnx.data").exists()
    imported = _check(path, net)
    assert imported.loaded.external_data == ("net.onnx.data",)
