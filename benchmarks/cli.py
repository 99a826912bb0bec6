"""Start-up of the command line as users meet it: each command run as a whole process several
times, the median wall time printed (targets: ``--help`` ≤ 0.3 s, ``inspect`` of the shipped
digits model ≤ 0.8 s).

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


if __name__ == "__main__":
    main()
