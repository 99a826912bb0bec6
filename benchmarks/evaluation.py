"""Insertion + deletion (48 steps each) with onnxlens vs Quantus's PixelFlipping (48 steps, run
twice for the same number of model calls; 48, not 50, because Quantus needs a step size that
divides H·W) on the same torch module, CPU, same threads,
interleaved repetitions; printed as ratios. Beside them the floor: plain ONNX Runtime forward
runs over as many rows as the two metrics score (2 × images × (steps + 1)), in runs of the size
the metrics use, on copies built beforehand — onnxlens / floor is what building the perturbed
copies and the bookkeeping cost on top of the model's own forward passes.

    pip install -e ".[reference]"
    python benchmarks/evaluation.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import quantus
import torch
import torchvision
from torch import nn

from onnxlens import Explainer
from onnxlens.evaluation import evaluate
from onnxlens.runtime import SessionConfig, create_session
from timing import interleaved_medians  # benchmarks/timing.py

STEPS = 48


def shapes_shaped():
    """The shipped shapes_cnn's architecture: 4 × (Conv 3×3, BatchNorm, ReLU), pools, GAP, linear."""
    layers, c = [], 3
    for i, width in enumerate((16, 32, 64, 64)):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if i < 3 else []
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cases = {"shapes_cnn-shaped, 64 × 64²": (shapes_shaped(), 64, 64),
             "ResNet-18, 8 × 224²": (torchvision.models.resnet18(), 8, 224)}
    print(f"insertion + deletion, {STEPS} steps each, {args.threads} thread(s), median of {args.repeats} "
          "interleaved runs (first round dropped)")
    print(f"{'model, images':<30}{'onnxlens s':>11}{'Quantus s':>11}{'Quantus/onnxlens':>18}{'floor s':>9}"
          f"{'onnxlens/floor':>16}")
    for name, (net, count, size) in cases.items():
        torch.manual_seed(0)
        net.eval()
        x = torch.rand(count, 3, size, size)
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        explainer = Explainer(path, device="cpu", threads=args.threads)
        e = explainer.explain(x.numpy(), "gradient")
        metric = quantus.PixelFlipping(features_in_step=3 * size * size // STEPS, perturb_baseline="black",
                                       disable_warnings=True)

        def quantus_run():
            for _ in range(2):  # deletion and (as the same work) insertion
                metric(model=net, x_batch=x.numpy(), y_batch=e.target, a_batch=e.heatmap[:, None], device="cpu",
                       channel_first=True, softmax=True)

        def onnxlens_run():
            evaluate(explainer, x.numpy(), [e], ["deletion", "insertion"], baselines=(),
                     params={"deletion": {"steps": STEPS}, "insertion": {"steps": STEPS}})

        engine = explainer.engine
        session = create_session(engine.forward_graph, SessionConfig(device="cpu", threads=args.threads))
        rows = 2 * count * (STEPS + 1)
        run = np.resize(x.numpy(), (4 * engine.batch_size, *x.shape[1:]))  # scores_in_batches' run size

        def floor_run():
            for start in range(0, rows, len(run)):
                session.run({engine.input_name: run[:min(len(run), rows - start)]})

        m, r = interleaved_medians(onnxlens_run, quantus_run, args.repeats)
        f, _ = interleaved_medians(floor_run, lambda: None, args.repeats)
        print(f"{name:<30}{m:>11.2f}{r:>11.2f}{r / m:>18.2f}{f:>9.2f}{m / f:>16.2f}")


if __name__ == "__main__":
    main()
