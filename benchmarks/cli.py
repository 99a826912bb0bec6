"""Start-up of the command line as users meet it: each command run as a whole process several
times, the median wall time printed (targets: ``--help`` ≤ 0.3 s, ``inspect`` of the shipped
digits model ≤ 0.8 s). Then, where torch is installed, ``explain`` of a ResNet-50 (224²) in a
fresh process with an empty cache of imported models and again with it filled: the second
skips canonicalization, probe runs and shape measurement.

    python benchmarks/cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_cnn.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    np.save(tmp / "x.npy", np.load(ROOT / "models" / "samples" / "digits" / "test.npz")["x"][:1])
    script = Path(sys.executable).parent / "onnxlens"  # the console script users run
    onnxlens = [str(script)] if script.exists() else [shutil.which("onnxlens") or "onnxlens"]
    commands = {
        "onnxlens --help": [*onnxlens, "--help"],
        "onnxlens inspect digits_cnn.onnx": [*onnxlens, "inspect", str(DIGITS)],
        "onnxlens explain digits_cnn.onnx (gradient, 1 image)": [
            *onnxlens, "explain", str(DIGITS), "--input", str(tmp / "x.npy"), "--method", "gradient",
            "--out", str(tmp / "e.npz")],
    }
    # bytecode caches as an installed package has them (the warm-up run writes onnxlens's own)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    print(f"median wall time of {args.repeats} runs (one warm-up dropped) of {onnxlens[0]}")
    for name, command in commands.items():
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
            times.append(time.perf_counter() - start)
        print(f"{name:<56}{statistics.median(times[1:]):>7.2f} s")
    try:
        import torch
        import torchvision
    except ImportError:
        print("ResNet-50 explain: skipped (needs torch and torchvision: pip install -e \".[reference]\")")
        return
    model, image = tmp / "resnet50.onnx", tmp / "r.npy"
    torch.onnx.export(torchvision.models.resnet50().eval(), (torch.rand(1, 3, 224, 224),), str(model), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    np.save(image, np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32))
    command = [*onnxlens, "explain", str(model), "--input", str(image), "--method", "gradient", "--out", str(tmp / "r.npz")]
    first, second = [], []
    for repeat in range(args.repeats):
        cache = {**env, "ONNXLENS_CACHE_DIR": str(tmp / f"cache{repeat}")}
        for times in (first, second):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=cache)
            times.append(time.perf_counter() - start)
    print(f"{'onnxlens explain resnet50.onnx, empty cache':<56}{statistics.median(first):>7.2f} s")
    print(f"{'onnxlens explain resnet50.onnx, the same model again':<56}{statistics.median(second):>7.2f} s")


if __name__ == "__main__":
    main()
