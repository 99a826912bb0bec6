"""An audit of 256 shipped-model images (digits_cnn; or the 60 of shapes_cnn) with 3 methods and
2 metrics: the Prefect flow (thread runner, ephemeral API) vs the same functions called
directly, as a ratio; Prefect's one-time API start-up is reported apart.

    python benchmarks/pipeline.py [--repeats 3] [--batch-size 32] [--model digits|shapes] [--dask]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from onnxlens.pipelines import flows  # sets the quiet Prefect environment first
from onnxlens.pipelines.audit import audit_directly
from timing import timed  # benchmarks/timing.py

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=("digits", "shapes"), default="digits")
    parser.add_argument("--dask", action="store_true", help="also time the Dask runner (needs onnxlens[dask])")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    count = 256 if args.model == "digits" else 60
    config = {"model": str(ROOT / "models" / f"{args.model}_cnn.onnx"),
              "dataset": {"path": str(ROOT / "models" / "samples" / args.model / "test.npz"), "limit": count},
              "methods": ["gradient", "gradcam", "lrp"], "metrics": ["deletion", "sparseness"],
              "batch_size": args.batch_size, "baselines": False, "device": "cpu"}
    start = time.perf_counter()
    flows.audit_flow({**config, "output": str(work / "warm-up")})
    first = time.perf_counter() - start
    tasks = -(-count // args.batch_size)
    prefect, direct = [], []
    for r in range(args.repeats):
        for kind, runs in (("prefect", prefect), ("direct", direct)):
            cfg = {**config, "output": str(work / f"{kind}{r}")}
            runs.append(timed(lambda: flows.audit_flow(cfg)) if kind == "prefect" else timed(lambda: audit_directly(cfg)))
            shutil.rmtree(cfg["output"])
    dask = []
    if args.dask:
        for r in range(args.repeats):
            cfg = {**config, "output": str(work / f"dask{r}"), "runner": "dask", "workers": 2}
            dask.append(timed(lambda: flows.audit_flow(cfg)))
            shutil.rmtree(cfg["output"])
    p, d = statistics.median(prefect), statistics.median(direct)
    print(f"{count} {args.model} images, 3 methods, 2 metrics, batch {args.batch_size} ({tasks} tasks), "
          f"median of {args.repeats}")
    print(f"first flow, including Prefect's ephemeral API start: {first:.1f} s")
    print(f"Prefect flow {p:.2f} s · direct {d:.2f} s · ratio {p / d:.3f} · overhead {1000 * (p - d) / tasks:.0f} ms "
          f"per task ({100 * (p - d) / d:.1f} % of the compute)")
    if dask:
        k = statistics.median(dask)
        print(f"Dask LocalCluster, 2 worker processes (local Prefect server and cluster start included): {k:.2f} s · "
              f"threads / dask {p / k:.2f}")


if __name__ == "__main__":
    main()
