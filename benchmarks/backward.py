"""Forward + backward (the input gradient) on ONNX Runtime vs its forward pass and vs torch
autograd on the same module, as ratios from interleaved repetitions; and compile time.

    pip install -e ".[reference]"
    python benchmarks/backward.py [--threads 2] [--repeats 5] [--batches 1 8 32] [--size 224]

Model: torchvision's ResNet-18 (random weights), exported with the TorchScript exporter at opset
17; compile time is measured on ResNet-50. Besides the bare sessions, the public API as users
call it: ``Explainer.explain(x, "gradient")`` — the default target, the predicted class — and
with the classes given (``target=``), each as a multiple of the ORT forward pass.
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

from onnxlens import Explainer, import_model
from onnxlens.graph_ops.backward import gradient_model
from onnxlens.runtime import SessionConfig, create_session
from timing import timed  # benchmarks/timing.py


def export(net, path: Path, size: int = 224) -> None:
    x = torch.rand(1, 3, size, size)
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SessionConfig(device="cpu", threads=args.threads)
    tmp = Path(tempfile.mkdtemp())

    net = torchvision.models.resnet18().eval()
    export(net, tmp / "resnet18.onnx", args.size)
    imported = import_model(tmp / "resnet18.onnx")
    grad = gradient_model(imported.model, imported.spec)
    forward = create_session(imported.model, config)
    backward = create_session(grad.vjp.model, config)
    explainer = Explainer(imported, device="cpu", threads=args.threads, batch_size=max(args.batches))

    size = args.size
    print(f"ResNet-18 {size}×{size}, {args.threads} thread(s), median of {args.repeats} interleaved runs")
    print(f"{'batch':>5} {'ORT fwd ms':>11} {'ORT grad ms':>12} {'grad/fwd':>9} {'explain ms':>11} {'explain/fwd':>12} "
          f"{'given ms':>9} {'given/fwd':>10} {'torch grad ms':>14} {'torch/ORT':>10}")
    for batch in args.batches:
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        seed = np.zeros((batch, 1000), np.float32)
        seed[np.arange(batch), np.arange(batch) % 1000] = 1
        xt, seed_t = torch.from_numpy(x), torch.from_numpy(seed)
        classes = np.arange(batch) % 1000

        def torch_grad():
            xx = xt.clone().requires_grad_()
            (net(xx) * seed_t).sum().backward()

        feeds = {"x": x, grad.vjp.seeds[grad.score]: seed}
        runs = {"fwd": lambda: forward.run({"x": x}), "grad": lambda: backward.run(feeds),
                "explain": lambda: explainer.explain(x, "gradient"),
                "given": lambda: explainer.explain(x, "gradient", classes), "torch": torch_grad}
        times = {k: [] for k in runs}
        for _ in range(args.repeats + 1):  # the first round warms up and is dropped
            for name, fn in runs.items():
                times[name].append(timed(fn))
        f, b, e, g, r = (statistics.median(times[k][1:]) for k in runs)
        print(f"{batch:>5} {f * 1e3:>11.1f} {b * 1e3:>12.1f} {b / f:>9.2f} {e * 1e3:>11.1f} {e / f:>12.2f} "
              f"{g * 1e3:>9.1f} {g / f:>10.2f} {r * 1e3:>14.1f} {r / b:>10.2f}")

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
