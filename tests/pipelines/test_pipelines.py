"""Audit pipelines: configs, datasets, the audit functions, the Prefect flow (retries, halving,
per-item failures), resume after kill -9, and the command line."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MODELS
from onnxlens.pipelines import audit, explaining, run_plan
from onnxlens.pipelines.config import ConfigError, load_config
from onnxlens.pipelines.datasets import list_items, load_batch
from onnxlens.evaluation.verdict import EXIT_VERDICT_FAILED

DIGITS = MODELS / "samples" / "digits" / "test.npz"
SHAPES = MODELS / "samples" / "shapes"


def _config(tmp_path, **overrides):
    base = {"model": str(MODELS / "digits_cnn.onnx"), "dataset": {"path": str(DIGITS), "limit": 12, "labels_key": "y"},
            "methods": ["gradient", "lrp"], "metrics": ["deletion", "sparseness", "completeness"], "batch_size": 4,
            "output": str(tmp_path / "run"), "baselines": False, "formats": ["html"]}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


# --- configs and datasets ------------------------------------------------------------------

@pytest.mark.parametrize("change, phrase", [
    ({"methods": ["gradient", "nope"]}, "unknown method 'nope'"),
    ({"metrics": ["nope"]}, "unknown metric 'nope'"),
    ({"batch_size": 0}, "batch_size: Input should be greater than 0"),
    ({"thresholds": [{"metric": "deletion"}]}, "give max or min"),
    ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ({"methods": []}, "methods: List should have at least 1 item"),
    ({"target": "mine"}, "target 'mine': expected a class index"),
    ({"target": "class=label,step=x"}, "step must be an integer"),
    ({"colormap": "rainbowz"}, "unknown colormap 'rainbowz'"),
])
def test_config_validation_names_the_problem(change, phrase, tmp_path):
    with pytest.raises(ConfigError, match=phrase):
        load_config(_config(tmp_path, **change))


def test_overrides_replace_only_what_is_given_and_are_validated(tmp_path):
    config = load_config(_config(tmp_path))
    changed = config.with_overrides(dataset={"limit": 3, "masks_key": None}, batch_size=2, device=None)
    assert (changed.dataset.limit, changed.batch_size, changed.device) == (3, 2, config.device)
    assert changed.dataset.labels_key == "y" and changed.methods == config.methods
    with pytest.raises(ConfigError, match="batch_size: Input should be greater than 0"):
        config.with_overrides(batch_size=0)


def test_layout_override_reaches_the_model(tmp_path):
    config = load_config(_config(tmp_path, dataset={"preprocessing": {"layout": "NHWC"}}))
    assert run_plan.explainer_for(config).model.spec.image_input.layout == "NHWC"
    assert run_plan.explainer_for(load_config(_config(tmp_path))).model.spec.image_input.layout == "NCHW"


def test_config_files_in_three_formats(tmp_path):
    (tmp_path / "a.toml").write_text('model = "m.onnx"\nmethods = ["gradient"]\n[dataset]\npath = "data"\n')
    (tmp_path / "a.yaml").write_text("model: m.onnx\nmethods: [gradient]\ndataset: {path: data}\n")
    (tmp_path / "a.json").write_text(json.dumps({"model": "m.onnx", "methods": ["gradient"], "dataset": {"path": "data"}}))
    for name in ("a.toml", "a.yaml", "a.json"):
        config = load_config(tmp_path / name)
        assert config.model == tmp_path / "m.onnx" and config.dataset.path == tmp_path / "data"
    (tmp_path / "bad.toml").write_text("model = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="cannot read audit config"):
        load_config(tmp_path / "missing.toml")


def _folder_dataset(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "sub/c"):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:20] = 255
    Image.fromarray(mask).save(folder / "a_mask.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_folder_dataset_records_corrupt_images_and_reads_masks(tmp_path):
    from onnxlens import import_model
    from onnxlens.pipelines.config import DatasetConfig

    config = DatasetConfig(path=_folder_dataset(tmp_path), mask_suffix="_mask")
    items = list_items(config)
    assert [i.id for i in items] == ["a.png", "b.png", "broken.png", "sub/c.png"]  # a_mask.png is a mask
    spec = import_model(MODELS / "digits_cnn.onnx").spec.image_input
    batch = load_batch(config, items, spec, (32, 32))
    assert list(batch.failed) == ["broken.png"] and "cannot read image" in batch.failed["broken.png"]
    assert batch.x.shape == (3, 1, 32, 32) and batch.masks.shape == (3, 32, 32)
    assert batch.masks[0].sum() == 8 * 16 and not batch.masks[1].any()


def test_manifest_dataset_with_boxes(tmp_path):
    from onnxlens.pipelines.config import DatasetConfig

    folder = _folder_dataset(tmp_path)
    (folder / "manifest.csv").write_text("path,label,box\na.png,3,2 2 10 6\nb.png,,\n")
    items = list_items(DatasetConfig(path=folder / "manifest.csv"))
    assert items[0].label == 3 and items[0].box == (2.0, 2.0, 10.0, 6.0) and items[1].label is None


# --- the audit functions -------------------------------------------------------------------

def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in ("seconds", "created", "cost", "provenance")}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def test_direct_audit_and_its_resume(tmp_path):
    config = _config(tmp_path, thresholds=[{"metric": "sparseness", "min": 0.99, "method": "lrp"}])
    first = audit.audit_directly(config)
    assert first["items"] == {"total": 12, "evaluated": 12, "failed": {}}
    assert first["provenance"]["tasks_computed"] == 3 * 3 and first["provenance"]["tasks_reused"] == 0
    assert len(first["evaluation"]["metrics"]["deletion"]["results"]["lrp"]["per_image"]) == 12
    assert first["verdict"]["passed"] is False and first["verdict"]["exit_code"] == EXIT_VERDICT_FAILED
    again = audit.audit_directly(config)
    assert again["provenance"]["tasks_reused"] == 9 and again["provenance"]["tasks_computed"] == 0
    assert _without_timing(again) == _without_timing(first)
    later = audit.audit_directly({**config, "output": str(tmp_path / "later"), "compare": config["output"],
                                  "dataset": {**config["dataset"], "limit": 8}})
    drift = later["drift"]["metrics"]["deletion"]["lrp"]
    assert drift["previous"] == first["evaluation"]["metrics"]["deletion"]["results"]["lrp"]["mean"]
    assert drift["change"] == pytest.approx(drift["current"] - drift["previous"])
    assert later["drift"]["model_changed"] is False and "Drift since" in (tmp_path / "later" / "report.html").read_text()
    run = Path(config["output"])
    assert json.loads((run / "verdict.json").read_text())["passed"] is False


def _segmenter(path: Path) -> Path:
    """Conv → Resize on the digits: a dense map [N, 3, 32, 32]."""
    import onnx
    from builders import f32, make_model, vi
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Resize", ["c", "", "s"], ["y"], mode="linear")]
    onnx.save(make_model(nodes, [vi("x", ["N", 1, 32, 32])], [vi("y", ["N", 3, 32, 32])],
                         [("w", f32(3, 1, 3, 3)), ("s", np.array([1, 1, 2, 2], np.float32))], opset=17), path)
    return path


def test_audit_targets_each_items_label_and_mask(tmp_path):
    """``class=label,region=dataset``: every item explained for its own class over its own
    mask, as explain does with that target; an item without a mask fails on its own."""
    from onnxlens import Explainer
    from onnxlens.methods.targets import Target

    model = _segmenter(tmp_path / "seg.onnx")
    x = np.load(DIGITS)["x"][:6]
    masks = np.zeros((6, 32, 32), bool)
    for i in range(5):
        masks[i, 4 * i:4 * i + 12, 8:20] = True
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "data.npz", x=x, y=labels, m=masks)
    config = _config(tmp_path, model=str(model), methods=["gradient", "occlusion"], target="class=label,region=dataset",
                     dataset={"path": str(tmp_path / "data.npz"), "masks_key": "m", "labels_key": "y", "limit": None},
                     metrics=["deletion", "relevance_mass"])
    results = audit.audit_directly(config)
    assert results["items"]["evaluated"] == 5 and list(results["items"]["failed"]) == ["row00005"]
    assert "has no mask or box" in results["items"]["failed"]["row00005"]
    stored = np.load(tmp_path / "run" / "batches" / "explain" / "gradient" / "batch00000.npz")
    want = Explainer(model, device="cpu").explain(x[:4], "gradient", Target(labels[:4], region=masks[:4]))
    np.testing.assert_allclose(stored["attribution"], want.attribution, rtol=1e-6)
    assert stored["target"].tolist() == [0, 1, 2, 0]
    deletion = results["evaluation"]["metrics"]["deletion"]["results"]["occlusion"]["per_image"]
    assert len(deletion) == 5 and all(np.isfinite(deletion))
    explained = audit.audit_directly({**config, "target": "class=1,region=dataset", "output": str(tmp_path / "one")})
    assert np.load(tmp_path / "one" / "batches" / "explain" / "gradient" / "batch00000.npz")["target"].tolist() == [1, 1, 1, 1]
    assert explained["items"]["evaluated"] == 5


def test_audit_of_a_recognizer_shows_its_decoded_paths(tmp_path):
    """A sequence target's class is −1 (the decoded path): the report still shows each overlay."""
    import onnx
    from builders import f32, make_model, vi
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["m"], axes=[2], keepdims=0),
             helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1])]
    onnx.save(make_model(nodes, [vi("x", ["N", 1, 32, 32])], [vi("y", ["N", 32, 5])], [("w", f32(5, 1, 3, 3))],
                         opset=17), tmp_path / "ocr.onnx")
    results = audit.audit_directly(_config(tmp_path, model=str(tmp_path / "ocr.onnx"), target="sequence",
                                           methods=["gradient"], metrics=["deletion"],
                                           dataset={"limit": 4}, gallery_size=2))
    assert results["items"]["evaluated"] == 4
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.count("decoded path") == 2 and page.count('alt="gradient overlay of') == 2


def test_batched_results_equal_one_evaluation(tmp_path):
    """Merging per-batch evaluations gives the values of one evaluation over all inputs."""
    from onnxlens import Explainer
    from onnxlens.evaluation import evaluate

    results = audit.audit_directly(_config(tmp_path))
    explainer = Explainer(MODELS / "digits_cnn.onnx", device="cpu")
    x = np.load(DIGITS)["x"][:12]
    whole = evaluate(explainer, x, ["gradient", "lrp"], ["deletion", "sparseness"], baselines=())
    for metric in ("deletion", "sparseness"):
        np.testing.assert_allclose(results["evaluation"]["metrics"][metric]["results"]["lrp"]["per_image"],
                                   whole["metrics"][metric]["results"]["lrp"]["per_image"], rtol=1e-5)


def test_baselines_are_scored_on_an_even_subset_and_the_report_says_so(tmp_path):
    config = _config(tmp_path, baselines=True, baseline_images=5, metrics=["deletion", "sparseness"],
                     methods=["gradient"], formats=["html"])
    results = audit.audit_directly(config)
    entries = results["evaluation"]["metrics"]["deletion"]["results"]
    scored = [i for i, v in enumerate(entries["baseline:center_surround"]["per_image"]) if v is not None]
    assert scored == [0, 2, 4, 7, 9]  # ⌊k·12/5⌋ over the 12 items, across the batches of 4
    assert entries["baseline:center_surround"]["images"] == 5 and entries["gradient"]["images"] == 12
    assert entries["gradient"]["forward_passes"] > entries["baseline:center_surround"]["forward_passes"] > 0
    assert all(entries["baseline:center_surround"]["curves"][i] is None for i in range(12) if i not in scored)
    assert entries["baseline:center_surround"]["standard_error"] > 0
    html = (Path(config["output"]) / "report.html").read_text()
    assert "Model-free baselines were scored on 5 of the 12 inputs, spread evenly, by deletion " in html and " ± " in html
    whole = audit.audit_directly({**config, "baseline_images": None, "output": str(tmp_path / "whole")})
    everything = whole["evaluation"]["metrics"]["deletion"]["results"]["baseline:center_surround"]["per_image"]
    assert [everything[i] for i in scored] == pytest.approx([entries["baseline:center_surround"]["per_image"][i] for i in scored])
    assert "Model-free baselines were scored" not in (tmp_path / "whole" / "report.html").read_text()


# --- the Prefect flow ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def flows():
    from onnxlens.pipelines import flows

    return flows


def test_flow_retries_a_transient_fault(flows, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = explaining.explain_batch

    def flaky(plan, index, label):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("transient: the disk hiccuped")
        return real(plan, index, label)

    monkeypatch.setattr(flows, "explain_batch", flaky)
    results = flows.audit_flow(_config(tmp_path, retries=1))
    # batch 0 failed after its first method; the retry reused that method's stored result
    assert calls["n"] == 3 * 2 + 2 and results["items"]["evaluated"] == 12
    assert results["provenance"]["tasks_computed"] == 8 and results["provenance"]["tasks_reused"] == 1


def test_flow_halves_a_batch_on_out_of_memory_and_keeps_going_past_bad_inputs(flows, tmp_path, monkeypatch):
    import onnxlens.methods.registry as registry

    real = registry.run_method

    def small_memory(name, engine, x, target=None, **params):
        if len(x) > 2:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 4 rows")
        return real(name, engine, x, target, **params)

    monkeypatch.setattr(explaining, "run_method", small_memory)
    folder = _folder_dataset(tmp_path)
    config = _config(tmp_path, dataset={"path": str(folder), "limit": None, "labels_key": None}, batch_size=4)
    results = flows.audit_flow(config)
    assert results["items"]["failed"].keys() == {"broken.png"}
    assert results["items"]["evaluated"] == 3
    assert any("out of memory on 3 inputs: retried as two halves" in n for n in results["provenance"]["notes"])


def test_permanent_failure_of_one_input_leaves_the_others(flows, tmp_path, monkeypatch):
    import onnxlens.methods.registry as registry
    from onnxlens.errors import InputShapeError

    real = registry.run_method

    def picky(name, engine, x, target=None, **params):
        if np.any(np.all(x.reshape(len(x), -1) == x.reshape(len(x), -1)[:, :1], axis=1)):
            raise InputShapeError("a blank input cannot be explained")
        return real(name, engine, x, target, **params)

    monkeypatch.setattr(explaining, "run_method", picky)
    data = np.load(DIGITS)["x"][:8].copy()
    data[5] = 0.0
    np.save(tmp_path / "x.npy", data)
    results = flows.audit_flow(_config(tmp_path, dataset={"path": str(tmp_path / "x.npy"), "limit": None,
                                                          "labels_key": None}))
    assert set(results["items"]["failed"]) == {"row00005"} and results["items"]["evaluated"] == 7


# --- resume after kill -9, and the command line --------------------------------------------

def _cli_env():
    """The subprocess gets its own throwaway Prefect home (not this process's database)."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}


def test_resume_after_kill_recomputes_only_missing_batches(tmp_path):
    batches = 8
    config = _config(tmp_path, dataset={"limit": 2 * batches}, batch_size=2, methods=["gradient", "integrated_gradients"])
    (tmp_path / "audit.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "onnxlens.cli", "audit", str(tmp_path / "audit.json")]
    proc = subprocess.Popen(command, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    explained = tmp_path / "run" / "batches" / "explain"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and len(list(explained.rglob("*.npz"))) < 3 and proc.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = len(list(explained.rglob("*.npz"))) + len(list((tmp_path / "run" / "batches" / "evaluate").glob("*.json")))
    assert 3 <= finished < batches * 3, "the audit was not killed mid-run"
    assert not list((tmp_path / "run").rglob("*.tmp"))  # nothing half-written survives as a result
    result = subprocess.run(command, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert resumed["provenance"]["tasks_reused"] >= finished
    assert resumed["provenance"]["tasks_computed"] == batches * 3 - resumed["provenance"]["tasks_reused"]
    uninterrupted = audit.audit_directly({**config, "output": str(tmp_path / "clean")})
    assert _without_timing(resumed["evaluation"]) == _without_timing(uninterrupted["evaluation"])


def _children(pid: int) -> dict[int, str]:
    """Child pid → command line, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_of_an_audit_leaves_no_api_server(tmp_path):
    batches = 8
    config = _config(tmp_path, dataset={"limit": 2 * batches}, batch_size=2, methods=["gradient", "integrated_gradients"])
    (tmp_path / "audit.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "onnxlens.cli", "audit", str(tmp_path / "audit.json")],
                            env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, servers = time.time() + 120, {}
        while time.time() < deadline and not servers and proc.poll() is None:
            servers = {pid: cmd for pid, cmd in _children(proc.pid).items() if "uvicorn" in cmd}
            time.sleep(0.2)
        assert servers, "the audit started no API server"
        os.kill(proc.pid, signal.SIGKILL)  # the audit alone, as the OOM killer or a scheduler would
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(pid) for pid in servers):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in servers), f"orphaned: {servers}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_cli_audit_of_a_model_with_flags_and_the_verdict_exit_code(tmp_path, cli):
    result = cli("audit", MODELS / "digits_cnn.onnx", "--data", DIGITS, "--methods", "gradient,lrp", "--limit", "6",
                 "--metrics", "deletion,sparseness", "--runner", "direct", "--out", tmp_path / "run", "--target", "class=3")
    assert result.returncode == 0, result.stderr
    assert "audit PASSED: 6 of 6 input(s)" in result.stdout
    assert json.loads((tmp_path / "run" / "config.json").read_text())["target"] == "class=3"
    stored = np.load(tmp_path / "run" / "batches" / "explain" / "lrp" / "batch00000.npz")
    assert stored["target"].tolist() == [3] * len(stored["target"])
    config = _config(tmp_path, thresholds=[{"metric": "sparseness", "min": 0.99, "description": "sparse maps"}])
    (tmp_path / "a.json").write_text(json.dumps(config))
    result = cli("audit", tmp_path / "a.json", "--runner", "direct")
    assert result.returncode == EXIT_VERDICT_FAILED and "FAIL: sparse maps · gradient" in result.stdout


@pytest.mark.parametrize("args, phrase", [
    (["models/digits_cnn.onnx"], "needs --data and --methods"),
    (["missing.toml"], "cannot read audit config"),
    (["models/digits_cnn.onnx", "--data", "nowhere", "--methods", "gradient"], "does not exist"),
    (["models/digits_cnn.onnx", "--data", "models/samples/digits/test.npz", "--methods", "nope"], "unknown method"),
])
def test_cli_audit_errors_are_one_line(args, phrase, cli):
    result = cli("audit", *[str(MODELS.parent / a) if a.startswith("models/") else a for a in args],
                 "--runner", "direct")
    assert result.returncode == 1 and phrase in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cuda_failure_falls_back_to_the_cpu(tmp_path, monkeypatch):
    import onnxlens.methods.registry as registry

    real = registry.run_method

    def cuda_breaks(name, engine, x, target=None, **params):
        if engine.config.device != "cpu":
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access")
        return real(name, engine, x, target, **params)

    monkeypatch.setattr(explaining, "run_method", cuda_breaks)
    results = audit.audit_directly(_config(tmp_path, device="auto", methods=["gradient"], dataset={"limit": 4}))
    assert results["items"]["evaluated"] == 4
    assert any("CUDA failure" in n and "retried on the CPU" in n for n in results["provenance"]["notes"])


@pytest.mark.parametrize("runner, package", [("dask", "prefect_dask"), ("ray", "prefect_ray")])
def test_worker_processes_give_the_thread_runners_results(runner, package, flows, tmp_path):
    """Dask runs in CI (the dask extra); Ray where onnxlens[ray] is installed."""
    pytest.importorskip(package)
    config = _config(tmp_path, runner=runner, workers=2, dataset={"limit": 8})
    on_workers = flows.audit_flow(config)
    on_threads = audit.audit_directly({**config, "runner": "threads", "output": str(tmp_path / "threads")})
    assert on_workers["provenance"]["tasks_computed"] == 2 * 3
    assert f"{socket.gethostname()}:{os.getpid()}" not in on_workers["provenance"]["processes"]  # ran on workers
    assert _without_timing(on_workers["evaluation"]) == _without_timing(on_threads["evaluation"])


@pytest.mark.parametrize("kwargs, phrase", [({}, "exactly one of --cron or --interval"),
                                            ({"cron": "0 2 * * *", "interval": 60}, "exactly one"),
                                            ({"interval": -5}, "positive number of seconds"),
                                            ({"cron": "every tuesday"}, "invalid schedule")])
def test_schedule_errors(kwargs, phrase, tmp_path):
    from onnxlens.pipelines.schedules import audit_deployment

    (tmp_path / "a.json").write_text(json.dumps(_config(tmp_path)))
    with pytest.raises(ConfigError, match=phrase):
        audit_deployment(tmp_path / "a.json", **kwargs)


def test_schedule_is_created_and_runs_once(tmp_path, flows):
    from onnxlens.pipelines.schedules import audit_deployment, serve_audit

    (tmp_path / "a.json").write_text(json.dumps(_config(tmp_path, dataset={"limit": 4})))
    deployment = audit_deployment(tmp_path / "a.json", cron="0 2 * * *")
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.parameters == {"config_path": str((tmp_path / "a.json").resolve())}
    assert audit_deployment(tmp_path / "a.json", interval=3600).schedules[0].schedule.interval.total_seconds() == 3600
    said = []
    serve_audit(tmp_path / "a.json", cron="0 2 * * *", run_once=True, announce=said.append)
    assert "UI http://127.0.0.1:" in said[0]
    runs = [p for p in (tmp_path / "run").iterdir() if (p / "results.json").exists()]
    assert len(runs) == 1 and json.loads((runs[0] / "results.json").read_text())["items"]["evaluated"] == 4
