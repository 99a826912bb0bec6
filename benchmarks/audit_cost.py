"""What an audit's metrics cost: the README's audit (gradient and Grad-CAM, the default metrics,
the model-free baselines) run twice in one process — with the fixed protocol (deletion and
insertion at 50 steps, baselines on every image) and with the defaults (curves refined per
image to an area tolerance of 0.01, baselines on ``baseline_images``) — printing per metric the
seconds, the forward passes and the standard error of each mean, and how far the means moved.
An earlier onnxlens (``PYTHONPATH=`` its checkout, ``--protocols fixed``) times the same audit
as it was.

    pip install -e ".[reference]"   # torch, for the ResNet-18
    python benchmarks/audit_cost.py --model shapes                     # the shipped shapes_cnn, 60 images
    python benchmarks/audit_cost.py --model resnet18 --images 48 --size 112
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from onnxlens import __version__
from onnxlens.bundle import is_baseline
from onnxlens.pipelines.audit import audit_directly
from onnxlens.pipelines.config import AuditConfig

ROOT = Path(__file__).resolve().parent.parent
FIXED = {"baseline_images": None, "metrics": [{"name": "deletion", "params": {"steps": 50}},
                                              {"name": "insertion", "params": {"steps": 50}},
                                              "faithfulness_correlation", "infidelity", "sparseness",
                                              "complexity", "completeness", "cost"]}
METRICS = [m if isinstance(m, str) else m["name"] for m in FIXED["metrics"]]


def resnet18(folder: Path, images: int, size: int) -> tuple[Path, Path]:
    """A torchvision ResNet-18 (seeded random weights, BatchNorm calibrated on the images, as
    the other benchmarks) and ``images`` seeded random images."""
    import sys

    import torch
    import torchvision

    sys.path.insert(0, str(ROOT / "tests"))
    from torch_models import calibrated, export

    torch.manual_seed(0)
    x = np.random.default_rng(0).random((images, 3, size, size), dtype=np.float32)
    net = calibrated(torchvision.models.resnet18(), torch.from_numpy(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(net, torch.from_numpy(x[:1]), folder / "resnet18.onnx")
    np.savez(folder / "images.npz", x=x)
    return folder / "resnet18.onnx", folder / "images.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("shapes", "digits", "resnet18"), default="shapes")
    parser.add_argument("--images", type=int, default=None, help="images audited (default: 60, or 48 for resnet18)")
    parser.add_argument("--size", type=int, default=112, help="the ResNet-18's input side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--protocols", type=lambda v: v.split(","), default=["fixed", "defaults"],
                        help="fixed, defaults or both (run an earlier onnxlens with PYTHONPATH=its checkout and "
                             "--protocols fixed to time it on the same audit)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    if args.model == "resnet18":
        images = args.images or 48
        model, data = resnet18(folder, images, args.size)
    else:
        images = args.images or 60
        model, data = ROOT / "models" / f"{args.model}_cnn.onnx", ROOT / "models" / "samples" / args.model / "test.npz"
    config = {"model": str(model), "dataset": {"path": str(data), "limit": images}, "methods": ["gradient", "gradcam"],
              "metrics": METRICS, "batch_size": args.batch_size, "device": "cpu", "formats": ["json"]}
    runs = {}
    for name in args.protocols:
        changes = {k: v for k, v in FIXED.items() if k in AuditConfig.model_fields} if name == "fixed" else {}
        start = time.perf_counter()
        results = audit_directly({**config, **changes, "output": str(folder / name)})
        runs[name] = (time.perf_counter() - start, results["evaluation"]["metrics"], results["timings"])
    print(f"{args.model}, {images} images, gradient + gradcam, 4 model-free baselines, batch {args.batch_size}, "
          f"onnxlens {__version__}: {' vs '.join(runs)}; per metric: seconds, forward passes, the largest standard "
          "error of a method's and of a baseline's mean")
    for metric in METRICS:
        cells = []
        for name, (_, metrics, _) in runs.items():
            results = metrics[metric]["results"]
            errors = [max((r.get("standard_error") or 0.0 for k, r in results.items() if is_baseline(k) == b),
                          default=0.0) for b in (False, True)]
            cells.append(f"{name} {sum(r['seconds'] for r in results.values()):6.1f} s "
                         f"{sum(r.get('forward_passes', 0) for r in results.values()):>6} passes "
                         f"SE {errors[0]:.2g} / {errors[1]:.2g}")
        print(f"  {metric:<25}" + "  |  ".join(cells))
    if len(runs) == 2:
        (_, first, _), (_, second, _) = runs.values()
        for kind in (False, True):
            moved = max((abs(first[m]["results"][k]["mean"] - second[m]["results"][k]["mean"])
                         for m in METRICS for k in first[m]["results"] if is_baseline(k) == kind
                         and first[m]["results"][k]["mean"] is not None and second[m]["results"][k]["mean"] is not None
                         and m in ("deletion", "insertion")), default=0.0)
            print(f"largest change of a {'baseline' if kind else 'method'}'s deletion or insertion mean: {moved:.3g}")
    for name, (wall, _, timings) in runs.items():
        explain = sum(t["seconds"] for t in timings["explain"].values())
        print(f"{name}: {wall:.1f} s in all, {explain:.1f} s explaining, {sum(timings['evaluate'].values()):.1f} s "
              "evaluating")
    if len(runs) == 2:
        (a, *_), (b, *_) = runs.values()
        print(f"speed-up of the whole audit: {a / b:.2f}×")


if __name__ == "__main__":
    main()
