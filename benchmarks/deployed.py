"""Deployed forms as users call them: the gradient (``Explainer.explain``, default target) on an
int8 QDQ ResNet-18 beside its float32 original, each beside its bare ORT forward pass; and the
import time of the largest third-party suite model.

    pip install -e ".[reference]" && python models/third_party.py
    python benchmarks/deployed.py [--threads 2] [--repeats 5] [--size 224] [--batch 8]

The int8 model is torchvision's ResNet-18 (random weights, BatchNorm statistics from a random
batch) exported with the TorchScript exporter, then ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations) calibrated on 16 random images. Medians of interleaved runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision

from onnxlens import Explainer
from onnxlens.runtime import SessionConfig, create_session
from timing import interleaved_medians, model_benchmark_args, timed  # benchmarks/timing.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import quantize_with_ort  # noqa: E402  (the tests' ORT quantization, as deployers do it)
from test_third_party import CACHE, SUITE  # noqa: E402
from torch_models import calibrated  # noqa: E402


def main() -> None:
    args = model_benchmark_args(__doc__.splitlines()[0], repeats=5)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    net = calibrated(torchvision.models.resnet18(), torch.rand(8, 3, args.size, args.size))
    torch.onnx.export(net, (torch.rand(1, 3, args.size, args.size),), str(tmp / "float.onnx"), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    rng = np.random.default_rng(0)
    calibration = rng.random((16, 3, args.size, args.size), dtype=np.float32)
    int8 = quantize_with_ort(tmp / "float.onnx", calibration, tmp, (("int8", "QDQ", True),))["int8"]
    x = rng.random((args.batch, 3, args.size, args.size), dtype=np.float32)
    config = SessionConfig(device="cpu", threads=args.threads)

    print(f"ResNet-18 {args.size}², batch {args.batch}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'model':>8} {'ORT fwd ms':>11} {'gradient ms':>12} {'grad/fwd':>9}")
    times = {}
    for name, path in (("float32", tmp / "float.onnx"), ("int8 QDQ", int8)):
        explainer = Explainer(path, device="cpu", threads=args.threads)
        session = create_session(path.read_bytes(), config)
        explainer.explain(x, "gradient")  # compile
        grad, fwd = interleaved_medians(lambda: explainer.explain(x, "gradient"), lambda: session.run({"x": x}),
                                        args.repeats)
        times[name] = (fwd, grad)
        print(f"{name:>8} {fwd * 1e3:>11.1f} {grad * 1e3:>12.1f} {grad / fwd:>9.2f}")
    (f32_fwd, f32_grad), (q_fwd, q_grad) = times["float32"], times["int8 QDQ"]
    print(f"int8/float32: forward {q_fwd / f32_fwd:.2f}×, gradient {q_grad / f32_grad:.2f}×")

    if (CACHE / "suite.json").exists():
        name = max(SUITE, key=lambda n: (CACHE / SUITE[n]["file"]).stat().st_size)
        path = CACHE / SUITE[name]["file"]
        seconds = timed(lambda: Explainer(path, device="cpu", threads=args.threads))
        print(f"import of the largest suite model, {name} ({path.stat().st_size / 1e6:.0f} MB): {seconds:.2f} s")
        start = time.perf_counter()  # ONNX Runtime alone: create_session also parses the file
        ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
        print(f"  (a bare ORT session of the same file: {time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
