"""Where a derivative is ambiguous — ReLU at 0, MaxPool ties, ReLU6 at its bounds, the maximum
of two equal values — onnxlens gives what PyTorch's autograd gives (skipped without torch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxlens import import_model  # noqa: E402
from onnxlens.graph_ops.backward import append_vjp  # noqa: E402
from onnxlens.runtime import SessionConfig, create_session  # noqa: E402


class TwoInputMax(nn.Module):
    def forward(self, x):
        return torch.maximum(x, x.flip(-1))


CASES = {
    "relu-at-zero": (nn.ReLU(), np.array([-1.0, 0.0, 0.0, 2.0])),
    "relu6-at-bounds": (nn.ReLU6(), np.array([0.0, 6.0, 3.0, 7.0])),
    "leaky-relu-at-zero": (nn.LeakyReLU(0.1), np.array([0.0, -1.0, 1.0, 0.0])),
    "elu-at-zero": (nn.ELU(0.5), np.array([0.0, -1.0, 1.0, 0.0])),
    "hardswish-at-breaks": (nn.Hardswish(), np.array([-3.0, 3.0, 0.0, 1.0])),
    "hardsigmoid-at-breaks": (nn.Hardsigmoid(), np.array([-3.0, 3.0, 0.0, 1.0])),
    "maxpool-ties": (nn.MaxPool2d(2, 2), np.ones(4)),
    "maxpool-overlapping-ties": (nn.MaxPool2d(3, 1, padding=1), np.ones(4)),
    "maximum-equal": (TwoInputMax(), np.array([1.0, 2.0, 2.0, 1.0])),
}


@pytest.mark.parametrize("case", CASES)
def test_tie_matches_torch(case, tmp_path):
    module, row = CASES[case]
    x = torch.tensor(np.tile(row, (1, 2, 4, 1)), dtype=torch.float32)  # (1, 2, 4, 4)
    torch.onnx.export(module, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    imported = import_model(tmp_path / "m.onnx")
    vjp = append_vjp(imported.model, ["y"], ["x"])
    xx = x.clone().requires_grad_()
    y = module(xx)
    seed = torch.arange(1, y.numel() + 1, dtype=torch.float32).reshape(y.shape)
    (y * seed).sum().backward()
    session = create_session(vjp.model, SessionConfig(device="cpu"))
    got = session.run({"x": x.numpy(), vjp.seeds["y"]: seed.numpy()})[vjp.grads["x"]]
    np.testing.assert_allclose(got, xx.grad.numpy(), rtol=1e-6, atol=1e-6)
