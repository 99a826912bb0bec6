"""Peak resident memory (``ru_maxrss`` of a child process per case) of Integrated Gradients as
its step count grows, and of IG and LRP beside Captum and Zennit on the same module, batch and
size. Rows per session run follow the memory budget (``--memory-budget``; default a quarter of
the available memory), so IG's memory stays flat however many steps it takes.

    pip install -e ".[reference]"
    python benchmarks/memory.py [--size 112] [--batch 8] [--model resnet18] [--sweep 32,128,512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
kind, model, size, batch, steps, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
if kind.startswith("onnxlens"):
    from onnxlens import Explainer
    explainer = Explainer(model, device="cpu", threads=2, memory_budget=None if budget == "default" else budget)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "onnxlens-ig":
        explainer.explain(x, "integrated_gradients", steps=steps)
    else:
        explainer.explain(x, "lrp")
    rows = explainer.engine.batch_size
else:
    import torch, torchvision
    torch.set_num_threads(2)
    net = getattr(torchvision.models, model)().eval()
    xt = torch.from_numpy(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        target = net(xt).argmax(dim=1)
    if kind == "captum-ig":
        from captum.attr import IntegratedGradients
        IntegratedGradients(net).attribute(xt, target=target, n_steps=steps, internal_batch_size=batch)
    else:
        from zennit.composites import EpsilonPlusFlat
        from zennit.attribution import Gradient
        from zennit.torchvision import ResNetCanonizer
        with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
            attributor(xt, torch.eye(1000)[target])
    rows = batch
print(json.dumps({"before_mb": before / 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": rows}))
"""


EXPORT = r"""
import sys, warnings
import torch, torchvision
warnings.filterwarnings("ignore")
model, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.onnx.export(getattr(torchvision.models, model)().eval(), (torch.rand(1, 3, size, size),), path, dynamo=False,
                  opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
"""


def measure(kind: str, model: str, size: int, batch: int, steps: int, budget: str) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, kind, model, str(size), str(batch), str(steps), budget],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--memory-budget", default="default")
    parser.add_argument("--sweep", type=lambda s: [int(v) for v in s.split(",") if v], default=[32, 128, 512],
                        help="IG step counts whose memory shows flatness (default 32,128,512; '' for none)")
    args = parser.parse_args()
    # exported in a child too: Linux keeps a process's peak RSS across fork and exec, so this
    # process stays small (no torch) for its children's numbers to be theirs
    path = Path(tempfile.mkdtemp()) / f"{args.model}.onnx"
    subprocess.run([sys.executable, "-c", EXPORT, args.model, str(args.size), str(path)], check=True,
                   capture_output=True)
    print(f"{args.model} {args.size}², batch {args.batch}, memory budget {args.memory_budget}: peak RSS of a child "
          "process (MB), and its RSS before the method ran")
    print(f"{'case':<34}{'rows/run':>9}{'before':>9}{'peak':>9}")
    cases = [("onnxlens-ig", str(path), steps) for steps in args.sweep]
    cases += [("captum-ig", args.model, 64), ("onnxlens-ig", str(path), 64), ("zennit-lrp", args.model, 0),
              ("onnxlens-lrp", str(path), 0)]
    for kind, model, steps in cases:
        got = measure(kind, model, args.size, args.batch, steps, args.memory_budget)
        label = f"{kind}{f', {steps} steps' if steps else ''}"
        print(f"{label:<34}{got['rows']:>9}{got['before_mb']:>9.0f}{got['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
