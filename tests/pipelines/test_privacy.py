"""No telemetry: a CLI run writes nothing into the user's home directory but matplotlib's own
configuration folder (and, for audits, an empty Prefect database in the cache directory)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from conftest import MODELS

MODEL = MODELS / "digits_cnn.onnx"


def test_cli_writes_nothing_into_home(tmp_path):
    """Nothing but matplotlib's folders and onnxlens's cache of imported models, which holds
    ONNX files and their import notes only."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "ONNXLENS_CACHE_DIR")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    x = tmp_path / "x.npy"
    np.save(x, np.load(MODEL.parent / "samples" / "digits" / "test.npz")["x"][:2])
    for args in (["inspect", str(MODEL)], ["explain", str(MODEL), "--input", str(x), "--method", "gradient",
                                           "--out", str(tmp_path / "e.npz")]):
        run = subprocess.run([sys.executable, "-m", "onnxlens.cli", *args], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    written = {p.relative_to(home).as_posix() for p in home.rglob("*")}
    cached = {w for w in written if w.startswith(".cache/onnxlens/")}
    assert written - cached <= {".config", ".config/matplotlib", ".cache", ".cache/matplotlib", ".cache/onnxlens"}
    assert {w.rsplit("/", 1)[-1] for w in cached if (home / w).is_file()} == {"model.onnx", "entry.json"}, cached


def test_the_throwaway_prefect_home_goes_with_the_process(tmp_path):
    """Without an API or a PREFECT_HOME, flows use a temporary Prefect home (an empty
    database each time); it is removed when the process exits, after a flow has run in it. What
    stays is one empty database migrated to Prefect's schema, in the cache directory, that the
    next run's home starts from: no flow, task or log of any run is in it."""
    import sqlite3

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    data = tmp_path / "x.npy"
    np.save(data, np.load(MODEL.parent / "samples" / "digits" / "test.npz")["x"][:2])
    code = ("import os, sys; from onnxlens.pipelines import flows; print(os.environ['PREFECT_HOME']); "
            "flows.audit_flow({'model': sys.argv[1], 'dataset': {'path': sys.argv[2]}, 'methods': ['gradient'], "
            "'metrics': ['sparseness'], 'output': sys.argv[3], 'formats': ['html']})")
    homes = []
    for run_dir in ("run", "again"):
        run = subprocess.run([sys.executable, "-c", code, str(MODEL), str(data), str(tmp_path / run_dir)], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        homes.append(run.stdout.strip().splitlines()[0])
        assert (tmp_path / run_dir / "results.json").exists()
    assert all("onnxlens-prefect-" in home and not os.path.exists(home) for home in homes)
    kept = {p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    template = [k for k in kept if k.startswith("onnxlens/")]
    assert len(template) == 1 and template[0].startswith("onnxlens/prefect/") and template[0].endswith("/prefect.db")
    database = sqlite3.connect(tmp_path / "cache" / template[0])
    try:
        assert [database.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("flow_run", "task_run", "log")] \
            == [0, 0, 0]
    finally:
        database.close()
