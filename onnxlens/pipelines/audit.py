"""The audit as plain functions over a run folder — planned, explained and evaluated batch by
batch, then aggregated. Prefect flows (``flows.py``) wrap these; so does a direct run.

Every batch result is written atomically (temporary file, then rename) under a key made of the
model's sha256, the batch's input content, the method and its parameters and the onnxlens
version, so a re-run after a crash reuses every finished batch and recomputes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxlens import __version__
from onnxlens.bundle import assemble
from onnxlens.errors import OnnxLensError
from onnxlens.evaluation import evaluate
from onnxlens.evaluation.verdict import findings, verdict, with_deployment_checks
from onnxlens.files import jsonable, npz_bytes, write_atomic, write_json
from onnxlens.methods import Explainer, Explanation
from onnxlens.methods.registry import run_method
from onnxlens.pipelines.config import AuditConfig, load_config
from onnxlens.pipelines.datasets import Batch, Item, list_items, load_batch
from onnxlens.pipelines.summary import drift, merge_batches


class OutOfMemory(Exception):
    """ONNX Runtime could not allocate memory for a batch (retried with half the batch)."""


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (OutOfMemory, MemoryError)) or any(
        s in text for s in ("failed to allocate memory", "bad_alloc", "out of memory", "cudaerrormemoryallocation"))


def is_cuda_failure(exc: BaseException) -> bool:
    text = str(exc)
    return "CUDA" in text or "cudnn" in text.lower() or "CUBLAS" in text


@dataclass(frozen=True)
class RunPlan:
    """What every task needs to find its work: JSON-ready, so it travels to any worker."""

    config: dict
    run_dir: str
    model_sha256: str
    items: list[dict]
    batches: list[list[int]]

    @property
    def audit(self) -> AuditConfig:
        return load_config(self.config)

    def batch_items(self, index: int) -> list[Item]:
        return [Item(**{**self.items[i], "box": tuple(self.items[i]["box"]) if self.items[i]["box"] else None})
                for i in self.batches[index]]


_EXPLAINERS: dict[tuple, Explainer] = {}


def explainer_for(config: AuditConfig, device: str | None = None) -> Explainer:
    """One Explainer (and so one set of sessions) per model, device and process."""
    layout = config.dataset.preprocessing.layout
    key = (str(config.model), device or config.device, config.batch_size, layout, os.getpid())
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = Explainer(config.model, device=device or config.device, batch_size=config.batch_size,
                                     layout=layout)
    return _EXPLAINERS[key]


def plan(config: AuditConfig | dict | str | Path, run_dir: str | Path | None = None) -> RunPlan:
    """Validate the model and the dataset, split the items into batches, and write the run's
    configuration, model card and item list into the run folder."""
    config = config if isinstance(config, AuditConfig) else load_config(config)
    run = Path(run_dir or config.output)
    explainer = explainer_for(config)
    items = list_items(config.dataset)
    batches = [list(range(i, min(i + config.batch_size, len(items)))) for i in range(0, len(items), config.batch_size)]
    config_dict = json.loads(config.model_dump_json())
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", config_dict)
    write_json(run / "model.json", explainer.model.describe())
    item_dicts = [{"id": i.id, "source": i.source, "label": i.label, "box": list(i.box) if i.box else None,
                   "mask": i.mask} for i in items]
    plan_ = RunPlan(config_dict, str(run), explainer.model.sha256, item_dicts, batches)
    write_json(run / "plan.json", {"config": plan_.config, "model_sha256": plan_.model_sha256,
                                   "items": plan_.items, "batches": plan_.batches})
    return plan_


_PLANS: dict[tuple, RunPlan] = {}


def load_plan(run_dir: str | Path) -> RunPlan:
    """The plan a run folder holds (tasks receive only the folder: small task parameters keep
    Prefect's per-task cost at milliseconds); cached per process until the file changes."""
    path = Path(run_dir) / "plan.json"
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _PLANS:
        data = json.loads(path.read_text())
        _PLANS[key] = RunPlan(data["config"], str(run_dir), data["model_sha256"], data["items"], data["batches"])
    return _PLANS[key]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(jsonable(part), sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _load(plan_: RunPlan, index: int) -> tuple[AuditConfig, Explainer, Batch]:
    config = plan_.audit
    explainer = explainer_for(config)
    from onnxlens.evaluation.maps import input_size

    batch = load_batch(config.dataset, plan_.batch_items(index), explainer.model.spec.image_input,
                       input_size(explainer.engine))
    return config, explainer, batch


def _input_digest(plan_: RunPlan, batch: Batch) -> str:
    return _digest(plan_.model_sha256, __version__, [i.id for i in batch.ok], batch.x.tobytes())


def explain_path(plan_: RunPlan, index: int, label: str) -> Path:
    return Path(plan_.run_dir) / "batches" / "explain" / label / f"batch{index:05d}.npz"


def explain_batch(plan_: RunPlan, index: int, label: str) -> dict:
    """Explain batch ``index`` with the method labelled ``label`` unless a result with the same
    key is already in the run folder. Out of memory: the batch is halved and retried; a CUDA
    failure: retried on the CPU; an input that fails on its own is recorded and skipped."""
    config, explainer, batch = _load(plan_, index)
    method = next(m for m in config.methods if (m.label or m.name) == label)
    key = _digest(_input_digest(plan_, batch), method.name, method.params, config.target)
    path = explain_path(plan_, index, label)
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return {"batch": index, "method": label, "status": "reused", **json.loads(str(stored["meta"]))}
    notes: list[str] = []
    failed = dict(batch.failed)
    targets = _targets(config, batch, failed)
    rows = [i for i, item in enumerate(batch.ok) if item.id not in failed]
    start = time.perf_counter()
    parts = _explain_rows(config, explainer, method, batch.x, targets, rows, failed, notes, [i.id for i in batch.ok])
    kept = [r for r, _ in parts]
    meta = {"failed": failed, "notes": notes, "seconds": time.perf_counter() - start,
            "rows": sum(map(len, kept)), "providers": explainer.engine.cache.providers()}
    arrays = _explanation_arrays([e for _, e in parts], kept, batch)
    buffer = npz_bytes(key=np.array(key), meta=np.array(json.dumps(jsonable(meta))), **arrays)
    write_atomic(path, buffer)
    return {"batch": index, "method": label, "status": "computed", **meta}


def _targets(config, batch, failed):
    if config.target == "predicted":
        return None
    targets = []
    for item in batch.ok:
        if item.label is None:
            failed[item.id] = "target = label, but the item has no label"
        targets.append(-1 if item.label is None else item.label)
    return np.asarray(targets)


def _explain_rows(config, explainer, method, x, targets, rows, failed, notes, ids):
    """[(row indices, Explanation)] for ``rows``, halving on out-of-memory, falling back to the
    CPU on a CUDA failure, isolating inputs that fail on their own."""
    if not rows:
        return []
    target = None if targets is None else targets[rows]
    try:
        return [(rows, run_method(method.name, explainer.engine, x[rows], target, **method.params))]
    except Exception as exc:  # noqa: BLE001 — sorted below; anything unknown propagates
        if is_out_of_memory(exc) and len(rows) > 1:
            notes.append(f"out of memory on {len(rows)} inputs: retried as two halves")
            half = len(rows) // 2
            return (_explain_rows(config, explainer, method, x, targets, rows[:half], failed, notes, ids)
                    + _explain_rows(config, explainer, method, x, targets, rows[half:], failed, notes, ids))
        if is_cuda_failure(exc) and explainer.engine.config.device != "cpu":
            notes.append(f"CUDA failure ({str(exc).splitlines()[0][:200]}): retried on the CPU")
            return _explain_rows(config, explainer_for(config, "cpu"), method, x, targets, rows, failed, notes, ids)
        if isinstance(exc, OnnxLensError) and len(rows) > 1:
            return [part for r in rows
                    for part in _explain_rows(config, explainer, method, x, targets, [r], failed, notes, ids)]
        if isinstance(exc, OnnxLensError) or is_out_of_memory(exc):
            failed[ids[rows[0]]] = f"{method.label or method.name}: {exc}"
            return []
        raise


def _explanation_arrays(parts: list[Explanation], kept: list[list[int]], batch: Batch) -> dict:
    order = [r for rows in kept for r in rows]
    out = {"rows": np.asarray(order, np.int64), "ids": np.asarray([batch.ok[r].id for r in order])}
    if not parts:
        return out
    for name in ("attribution", "heatmap", "target", "score"):
        out[name] = np.concatenate([getattr(e, name) for e in parts])
    if all(e.layer_map is not None for e in parts):
        out["layer_map"] = np.concatenate([e.layer_map for e in parts])
    first = parts[0]
    for key, value in first.diagnostics.items():
        values = [e.diagnostics.get(key) for e in parts]
        if isinstance(value, dict):  # per tensor (LRP): the input's entry is what checks read
            continue
        if all(isinstance(v, np.ndarray) and v.shape[:1] == e.score.shape and v.shape[1:] == value.shape[1:]
               for v, e in zip(values, parts)):
            out[f"diagnostics/{key}"] = np.concatenate(values)
    gaps = [e.diagnostics.get("conservation_gap") for e in parts]
    if all(isinstance(g, dict) for g in gaps):
        name = next(iter(gaps[0]))  # the input comes first
        out["diagnostics/conservation_gap"] = np.concatenate([g[name] for g in gaps])
    params = {k: v for k, v in first.params.items() if not isinstance(v, np.ndarray)}
    out["method"] = np.asarray(first.method)
    out["params"] = np.asarray(json.dumps(jsonable(params)))
    out["seconds"] = np.asarray(sum(e.timings.get("total", 0.0) for e in parts))
    return out


def _stored_explanation(path: Path):
    """(key, row indices, Explanation) of a stored batch result; (key, None, None) when it
    holds no rows."""
    with np.load(path, allow_pickle=False) as data:
        key = str(data["key"])
        if "attribution" not in data.files:
            return key, None, None
        diagnostics = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("diagnostics/")}
        e = Explanation(data["attribution"], data["heatmap"], data["target"], data["score"], str(data["method"]),
                        json.loads(str(data["params"])), data["layer_map"] if "layer_map" in data.files else None,
                        {"total": float(data["seconds"])}, diagnostics)
        return key, data["rows"], e


def evaluate_path(plan_: RunPlan, index: int) -> Path:
    return Path(plan_.run_dir) / "batches" / "evaluate" / f"batch{index:05d}.json"


def evaluate_batch(plan_: RunPlan, index: int) -> dict:
    """Evaluate the stored explanations of batch ``index`` (the inputs every method explained)."""
    config, explainer, batch = _load(plan_, index)
    labels = config.method_labels()
    stored = {label: _stored_explanation(explain_path(plan_, index, label)) for label in labels}
    with_rows = {label: (rows, e) for label, (_, rows, e) in stored.items() if e is not None}
    common = sorted(set.intersection(*(set(r.tolist()) for r, _ in with_rows.values()))) if with_rows else []
    keys = [key for key, _, _ in stored.values()]
    masks_digest = batch.masks.tobytes() if batch.masks is not None else b""
    metrics = [(m.name, m.params) for m in config.metrics]
    key = _digest(keys, metrics, masks_digest, config.baselines, config.seed, common)
    path = evaluate_path(plan_, index)
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("key") == key:
            return {"batch": index, "status": "reused"}
    result = {"key": key, "ids": [batch.ok[r].id for r in common], "results": None}
    if common:
        explanations = {}
        for label, (rows, e) in with_rows.items():
            pick = [list(rows).index(r) for r in common]
            explanations[label] = Explanation(e.attribution[pick], e.heatmap[pick], e.target[pick], e.score[pick],
                                              e.method, e.params, None if e.layer_map is None else e.layer_map[pick],
                                              {"total": e.timings["total"] * len(pick) / max(1, len(rows))},
                                              {k: v[pick] for k, v in e.diagnostics.items()})
        masks = batch.masks[common] if batch.masks is not None else None
        from onnxlens.evaluation import DEFAULT_METRICS, METRICS

        names = [m.name for m in config.metrics] or [m for m in DEFAULT_METRICS
                                                       if masks is not None or not METRICS[m].needs_masks]
        result["results"] = evaluate(explainer.engine, batch.x[common], explanations, names, masks,
                                     params={m.name: m.params for m in config.metrics if m.params},
                                     baselines=("center_surround", "spectral_residual", "local_entropy", "itti")
                                     if config.baselines else (), seed=config.seed)
    write_json(path, result)
    return {"batch": index, "status": "computed"}


def aggregate(plan_: RunPlan, task_log: list[dict]) -> dict:
    """Merge every batch into the run's bundle (results.json, validated against its schema) and
    verdict.json, write gallery.npz, and render the config's documents (report.html, .pdf)."""
    config = plan_.audit
    run = Path(plan_.run_dir)
    batches = [json.loads(evaluate_path(plan_, i).read_text()) for i in range(len(plan_.batches))]
    failed: dict[str, str] = {}
    notes = []
    for entry in task_log:
        failed.update(entry.get("failed", {}))
        notes += [f"batch {entry['batch']} · {entry.get('method', 'evaluation')}: {n}" for n in entry.get("notes", [])]
    merged = merge_batches([b["results"] for b in batches if b["results"]], [b["ids"] for b in batches if b["results"]])
    statuses = [e["status"] for e in task_log]
    labels = config.method_labels()
    metrics = merged.get("metrics", {})
    parts = {
        "model": json.loads((run / "model.json").read_text()),
        "config": plan_.config,
        "items": {"total": len(plan_.items), "evaluated": len(merged.get("ids", [])), "failed": failed},
        "evaluation": merged,
        "provenance": {"tasks_computed": statuses.count("computed"), "tasks_reused": statuses.count("reused"),
                       "processes": sorted({e["process"] for e in task_log if "process" in e}), "notes": notes},
        "timings": _timings(task_log, merged),
        "verdict": verdict(config.thresholds, labels, metrics, len(failed)),
        "findings": findings(metrics, list(merged.get("explanations", {})), config.dataset.masks_mark),
    }
    if config.compare is not None:
        parts["drift"] = drift(metrics, parts["model"]["sha256"], config.compare)
    deployment_file = None
    if config.compare_model is not None:
        parts["deployment"], deployment_file = write_deployment(plan_, merged.get("ids", []))
        parts["verdict"] = with_deployment_checks(parts["verdict"], parts["deployment"], config.compare_model.severity)
    parts["frequency"], frequency_file = write_frequency(plan_)
    parts["arrays"] = {
        "explanations": {label: [str(explain_path(plan_, i, label).relative_to(run)) for i in range(len(plan_.batches))]
                         for label in labels},
        "gallery": write_gallery(plan_, merged.get("ids", [])), "deployment": deployment_file,
        "frequency": frequency_file}
    results = assemble(providers=[p for e in task_log for p in e.get("providers", [])], **parts)
    write_json(run / "results.json", results)
    from onnxlens.report.pdf import PdfError
    from onnxlens.report.render import render_run

    try:
        render_run(run, config.formats, results)
    except PdfError as exc:  # everything else is written; say what is missing and why
        results["provenance"]["notes"].append(f"report.pdf not written: {exc}")
        write_json(run / "results.json", results)
    return results


def _timings(task_log: list[dict], merged: dict) -> dict:
    """Seconds spent explaining, per method (as first computed, also for reused batches), and
    evaluating, per metric."""
    explain: dict[str, dict] = {}
    for entry in task_log:
        if "method" in entry and "seconds" in entry:
            t = explain.setdefault(entry["method"], {"seconds": 0.0, "inputs": 0})
            t["seconds"] += entry["seconds"]
            t["inputs"] += entry.get("rows", 0)
    for t in explain.values():
        t["per_input"] = t["seconds"] / t["inputs"] if t["inputs"] else None
    evaluate_ = {name: sum(r.get("seconds", 0.0) for r in entry["results"].values())
                 for name, entry in merged.get("metrics", {}).items()}
    return {"explain": explain, "evaluate": evaluate_}


GALLERY = "gallery.npz"
FREQUENCY = "frequency.npz"


def write_frequency(plan_: RunPlan, cutoff: float = 0.5) -> tuple[dict, str | None]:
    """The frequency analysis of a run: each method's mean radial power spectrum and
    high-frequency share over every stored map, and the first convolution's filters with their
    magnitude responses (arrays into frequency.npz; the summary for results.json)."""
    from onnxlens.errors import OnnxLensError
    from onnxlens.evaluation.frequency import (
        filter_frequency_response,
        first_conv_filters,
        high_frequency_share,
        radial_power_spectrum,
    )

    maps = {}
    for label in plan_.audit.method_labels():
        heatmaps = []
        for index in range(len(plan_.batches)):
            with np.load(explain_path(plan_, index, label), allow_pickle=False) as data:
                if "heatmap" in data.files:
                    heatmaps.append(data["heatmap"])
        if heatmaps:
            stacked = np.concatenate(heatmaps)
            frequencies, power = radial_power_spectrum(stacked)
            mean_power = power.mean(axis=0)
            maps[label] = {"frequencies": frequencies, "power": mean_power / max(mean_power.max(), 1e-300),
                           "high_frequency_share": float(high_frequency_share(stacked, cutoff).mean())}
    summary = {"cutoff": cutoff, "maps": maps, "first_layer": None}
    try:
        node, weights = first_conv_filters(explainer_for(plan_.audit).engine)
    except OnnxLensError:
        return summary, None
    response = filter_frequency_response(weights, cutoff=cutoff)
    summary["first_layer"] = {"node": node, "filters": int(weights.shape[0]),
                              "high_frequency_share": response["high_frequency_share"]}
    write_atomic(Path(plan_.run_dir) / FREQUENCY, npz_bytes(filters=weights.astype(np.float32),
                                                              responses=response["response"].astype(np.float32)))
    return summary, FREQUENCY


def write_gallery(plan_: RunPlan, evaluated: list[str]) -> str | None:
    """The first ``gallery_size`` evaluated inputs as displayable pictures, with each method's
    heatmap and target, into gallery.npz (what the report shows; None when empty)."""
    from onnxlens.methods.explanation import displayable

    config = plan_.audit
    wanted = evaluated[: config.gallery_size]
    labels = config.method_labels()
    ids, pictures, maps = [], [], {label: [] for label in labels}
    for index in range(len(plan_.batches)):
        if len(ids) >= len(wanted):
            break
        if not {plan_.items[j]["id"] for j in plan_.batches[index]} & set(wanted):
            continue
        _, explainer, batch = _load(plan_, index)
        stored = {}
        for label in labels:
            path = explain_path(plan_, index, label)
            with np.load(path, allow_pickle=False) as data:
                if "heatmap" in data.files:
                    stored[label] = {str(i): (h, int(t)) for i, h, t in zip(data["ids"], data["heatmap"], data["target"])}
        for row, item in zip(batch.x, batch.ok):
            if item.id in wanted:
                ids.append(item.id)
                pictures.append(displayable(row, explainer.model.spec.image_input.layout))
                for label in labels:
                    maps[label].append(stored.get(label, {}).get(item.id))
    if not ids:
        return None
    arrays = {"ids": np.asarray(ids), "pictures": (np.clip(np.stack(pictures), 0, 1) * 255).round().astype(np.uint8),
              "methods": np.asarray(labels)}
    for label, entries in maps.items():
        shape = next((h.shape for h, _ in filter(None, entries)), pictures[0].shape[:2])
        arrays[f"heatmap/{label}"] = np.stack([e[0] if e else np.full(shape, np.nan) for e in entries]).astype(np.float32)
        arrays[f"target/{label}"] = np.asarray([e[1] if e else -1 for e in entries], np.int64)
    write_atomic(Path(plan_.run_dir) / GALLERY, npz_bytes(**arrays))
    return GALLERY


DEPLOYMENT = "deployment.npz"


def write_deployment(plan_: RunPlan, evaluated: list[str]) -> tuple[dict, str]:
    """The audited model (the deployed form) compared with ``compare_model`` (its reference) on
    the first evaluated inputs: the comparison for results.json, and the pictures and both
    models' maps of the ``gallery_size`` most-changed inputs in deployment.npz."""
    from onnxlens.evaluation.deployment import compare_deployment
    from onnxlens.methods.explanation import displayable

    config = plan_.audit
    wanted = set(evaluated[: config.compare_model.limit])
    ids, rows = [], []
    for index in range(len(plan_.batches)):
        if len(ids) >= len(wanted):
            break
        _, explainer, batch = _load(plan_, index)
        for row, item in zip(batch.x, batch.ok):
            if item.id in wanted:
                ids.append(item.id)
                rows.append(row)
    deployed = explainer_for(config)
    reference = Explainer(config.compare_model.path, device=config.device, batch_size=config.batch_size,
                          layout=config.dataset.preprocessing.layout)
    x = np.stack(rows)
    methods = {m.label or m.name: (m.name, m.params) for m in config.methods}
    result, maps = compare_deployment(reference.engine, deployed.engine, x, methods,
                                      thresholds=config.compare_model.thresholds)
    for row in result["per_input"]:
        row["id"] = ids[row["index"]]
    result["reference"] = {"file": Path(config.compare_model.path).name, "sha256": reference.model.sha256,
                           "precision": reference.model.precision}
    shown = [row["index"] for row in result["per_input"][: config.gallery_size]]
    layout = deployed.model.spec.image_input.layout
    arrays = {"ids": np.asarray([ids[i] for i in shown]), "methods": np.asarray(list(maps)),
              "pictures": (np.stack([displayable(x[i], layout) for i in shown]) * 255).round().astype(np.uint8)}
    for label, (ref, dep) in maps.items():
        arrays[f"reference/{label}"] = ref[shown].astype(np.float32)
        arrays[f"deployed/{label}"] = dep[shown].astype(np.float32)
    write_atomic(Path(plan_.run_dir) / DEPLOYMENT, npz_bytes(**arrays))
    return result, DEPLOYMENT


def audit_directly(config: AuditConfig | dict | str | Path, run_dir=None, progress=None) -> dict:
    """The whole audit without Prefect: the same functions, one after another."""
    plan_ = plan(config, run_dir)
    labels = plan_.audit.method_labels()
    log, total = [], len(plan_.batches) * (len(labels) + 1)
    for index in range(len(plan_.batches)):
        for label in labels:
            log.append(explain_batch(plan_, index, label))
            if progress:
                progress(len(log), total)
        log.append(evaluate_batch(plan_, index))
        if progress:
            progress(len(log), total)
    return aggregate(plan_, log)
