"""Shared set-up for the torch reference tests: eval-mode modules with non-trivial BatchNorm
statistics, exported the way deployed models usually are. Import only after
``pytest.importorskip("torch")``."""

from __future__ import annotations

import torch
from torch import nn


def prepared(net: nn.Module) -> nn.Module:
    """``net`` in eval mode, ReLUs out of place (reference hooks need that), BatchNorm running
    statistics drawn from torch's generator (seed it first) so folding BatchNorm is not the
    identity."""
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def calibrated(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """``net`` in eval mode with its BatchNorm statistics measured on ``x`` (as training would
    leave them), so deep random networks neither explode nor saturate."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        net.train()(x)
    return net.eval()


def export(net: nn.Module, x: torch.Tensor, path, opset: int = 17) -> None:
    """TorchScript export with a dynamic batch, input ``x`` and output ``y``."""
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}})
