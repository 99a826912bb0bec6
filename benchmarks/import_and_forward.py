"""Import cost and session overhead, as ratios from interleaved repetitions.

    python benchmarks/import_and_forward.py [--repeats 30] [--threads 2]

For each shipped model: the time of ``import_model`` (load + validate + canonicalize + verify
by running) against one plain ONNX Runtime session creation; and onnxlens ``Session.run``
against a bare ``InferenceSession.run`` on the same bytes and batch (the wrapper's overhead).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import onnxruntime as ort

from onnxlens import import_model
from onnxlens.runtime import SessionConfig, create_session, probe_feeds
from timing import timed  # benchmarks/timing.py

MODELS = Path(__file__).resolve().parents[1] / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{'model':<18}{'batch':>6}{'import ms':>11}{'ort load ms':>13}{'ratio':>7}"
          f"{'run ms':>9}{'bare ms':>9}{'overhead':>10}")
    for path in sorted(MODELS.glob("*.onnx")):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        imports, loads = [], []
        for _ in range(5):
            imports.append(timed(lambda: import_model(path)))
            loads.append(timed(lambda: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])))
        imported = import_model(path)
        data = imported.model.SerializeToString()
        ours = create_session(data, SessionConfig(device="cpu", threads=args.threads))
        bare = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        name = imported.spec.image_input.name
        for batch in (1, 8, 32):
            feeds = probe_feeds(imported.model, batch)
            run_ours, run_bare = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                run_ours.append(timed(lambda: ours.run(feeds)))
                run_bare.append(timed(lambda: bare.run(None, {name: feeds[name]})))
            m_imp, m_load = statistics.median(imports), statistics.median(loads)
            m_ours, m_bare = statistics.median(run_ours), statistics.median(run_bare)
            print(f"{path.name:<18}{batch:>6}{m_imp * 1e3:>11.1f}{m_load * 1e3:>13.1f}{m_imp / m_load:>7.1f}"
                  f"{m_ours * 1e3:>9.2f}{m_bare * 1e3:>9.2f}{m_ours / m_bare:>10.3f}")


if __name__ == "__main__":
    main()
