"""Forward + backward (the input gradient) on ONNX Runtime vs its forward pass and vs torch
autograd on the same module, as ratios from interleaved repetitions; and compile time.

    pip install -e ".[reference]"
    python benchmarks/backward.py [--threads 2] [--repeats 5] [--batches 1 8 32]

Model: torchvision's ResNet-18 (random weights) at 224×224, exported with the TorchScript
exporter at opset 17; compile time is measured on ResNet-50.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from onnxlens import import_model
from onnxlens.graph_ops.backward import gradient_model
from onnxlens.runtime import SessionConfig, create_session
from timing import timed  # benchmarks/timing.py


def export(net, path: Path) -> None:
    x = torch.rand(1, 3, 224, 224)
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SessionConfig(device="cpu", threads=args.threads)
    tmp = Path(tempfile.mkdtemp())

    net = torchvision.models.resnet18().eval()
    export(net, tmp / "resnet18.onnx")
    imported = import_model(tmp / "resnet18.onnx")
    grad = gradient_model(imported.model, imported.spec)
    forward = create_session(imported.model, config)
    backward = create_session(grad.vjp.model, config)

    print(f"ResNet-18 224×224, {args.threads} thread(s), median of {args.repeats} interleaved runs")
    print(f"{'batch':>5} {'ORT fwd ms':>11} {'ORT grad ms':>12} {'grad/fwd':>9} {'torch grad ms':>14} {'torch/ORT':>10}")
    for batch in args.batches:
        x = np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32)
        seed = np.zeros((batch, 1000), np.float32)
        seed[np.arange(batch), np.arange(batch) % 1000] = 1
        xt, seed_t = torch.from_numpy(x), torch.from_numpy(seed)

        def torch_grad():
            xx = xt.clone().requires_grad_()
            (net(xx) * seed_t).sum().backward()

        feeds = {"x": x, grad.vjp.seeds[grad.score]: seed}
        fwd, bwd, ref = [], [], []
        for _ in range(args.repeats + 1):  # the first round warms up and is dropped
            fwd.append(timed(lambda: forward.run({"x": x})))
            bwd.append(timed(lambda: backward.run(feeds)))
            ref.append(timed(torch_grad))
        f, b, r = (statistics.median(v[1:]) for v in (fwd, bwd, ref))
        print(f"{batch:>5} {f * 1e3:>11.1f} {b * 1e3:>12.1f} {b / f:>9.2f} {r * 1e3:>14.1f} {r / b:>10.2f}")

    export(torchvision.models.resnet50().eval(), tmp / "resnet50.onnx")
    r50 = import_model(tmp / "resnet50.onnx")
    start = time.perf_counter()
    g50 = gradient_model(r50.model, r50.spec)
    built = time.perf_counter()
    create_session(g50.vjp.model, config)
    done = time.perf_counter()
    print(f"ResNet-50 compile: append_vjp {built - start:.2f} s + session {done - built:.2f} s = {done - start:.2f} s")


if __name__ == "__main__":
    main()
