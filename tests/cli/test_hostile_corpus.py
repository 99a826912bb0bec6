"""The hostile-input corpus (tests/hostile_corpus.py): mutated models and arrays over the
shipped models, each run through the command line in a forked child. Every case keeps every
promise: one clean line or a clean success, bounded time and memory, no canary read, no NaN.
ONNXLENS_HOSTILE_CASES sets the size of the plain run (150); the slow tier runs 1,000 more."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
import hostile_corpus

RUNNER = ROOT / "tests" / "hostile_corpus.py"


def _keeps_every_promise(tmp_path, cases: int, seed: int):
    run = subprocess.run([sys.executable, str(RUNNER), "--cases", str(cases), "--seed", str(seed),
                          "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=1800)
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == cases, run.stderr[-2000:]
    broken = [f"{r['id']} [{r['command']}]: {r['broken']}" for r in results if r["broken"]]
    assert not broken, "\n".join(broken[:20])
    assert run.returncode == 0
    exits = {r["exit"] for r in results}
    assert exits == {0, 1}, exits  # the corpus reaches both outcomes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the runner forks a child per case")
def test_every_hostile_case_keeps_every_promise(tmp_path):
    _keeps_every_promise(tmp_path, int(os.environ.get("ONNXLENS_HOSTILE_CASES", "150")), seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the runner forks a child per case")
def test_a_thousand_more_hostile_cases_keep_every_promise(tmp_path):
    _keeps_every_promise(tmp_path, 1000, seed=1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the runner forks a child per case")
def test_a_10000_node_chain_keeps_every_promise():
    """Deep graphs once took minutes to compile (ONNX Runtime's planners are super-linear)."""
    model, x = hostile_corpus._seed_models()[1]
    deep = hostile_corpus.deep_chain(model, None, length=10_500)
    cases = [hostile_corpus.Case(f"chain-{c[-1]}", "deep_chain", deep, c, array=x) for c in hostile_corpus.COMMANDS[2:]]
    results = hostile_corpus.run(cases)
    assert [r["exit"] for r in results] == [0, 0, 0], [r["stderr"] for r in results]
    assert not [r["broken"] for r in results if r["broken"]]


def test_the_corpus_is_deterministic_and_covers_every_mutation():
    first = [(c.id, c.model) for c in hostile_corpus.corpus(120, seed=3)]
    assert first == [(c.id, c.model) for c in hostile_corpus.corpus(120, seed=3)]
    kinds = {c.kind for c in hostile_corpus.corpus(400, seed=0)}
    assert kinds == {m.__name__ for m in hostile_corpus.MUTATIONS} | {"bad_array"}


def test_the_runner_catches_a_broken_promise(tmp_path, monkeypatch):
    """The verdict is not vacuous: a success with stderr noise, two error lines, an internal
    error, a NaN result and a leaked canary are each caught."""
    case = hostile_corpus.Case("x", "t", b"", ("explain",))
    out = tmp_path / "out.npz"

    def verdict(code, stdout=b"", stderr=b""):
        (tmp_path / "stdout").write_bytes(stdout)
        (tmp_path / "stderr").write_bytes(stderr)
        return hostile_corpus._verdict(case, code, tmp_path, out, 0.1, 100)

    assert verdict(0) == [] and verdict(1, stderr=b"onnxlens: error: bad\n") == []
    assert verdict(0, stderr=b"[E:onnxruntime] noise\n")
    assert verdict(1, stderr=b"[E:onnxruntime] noise\nonnxlens: error: bad\n")
    assert verdict(3, stderr=b"onnxlens: internal error: KeyError\n")
    assert verdict(1, stdout=hostile_corpus.CANARY, stderr=b"onnxlens: error: x\n")
    assert verdict(None)
    import numpy as np

    np.savez(out, heatmap=np.array([np.nan]))
    assert verdict(0) == ["a NaN-bearing success"]
