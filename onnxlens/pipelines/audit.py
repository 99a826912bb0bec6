"""An audit's last step and the whole audit without Prefect. ``aggregate`` merges every
batch into the run's bundle (results.json) and renders its documents; ``audit_directly`` runs
plan → explain → evaluate → aggregate in this process. The steps live beside it:
``run_plan`` (the plan and the run folder), ``explaining``, ``evaluating``, ``artifacts``."""

from __future__ import annotations

import json
from pathlib import Path

from onnxlens.bundle import assemble
from onnxlens.evaluation.verdict import findings, verdict, with_deployment_checks
from onnxlens.files import write_json
from onnxlens.pipelines.artifacts import write_deployment, write_frequency, write_gallery
from onnxlens.pipelines.config import AuditConfig
from onnxlens.pipelines.evaluating import evaluate_batch
from onnxlens.pipelines.explaining import explain_batch
from onnxlens.pipelines.run_plan import RunPlan, plan
from onnxlens.pipelines.summary import drift, merge_batches
from onnxlens.report.pdf import PdfError
from onnxlens.report.render import render_run


def aggregate(plan_: RunPlan, task_log: list[dict]) -> dict:
    """Merge every batch into the run's bundle (results.json, validated against its schema) and
    verdict.json, write gallery.npz, and render the config's documents (report.html, .pdf)."""
    config = plan_.audit
    run = Path(plan_.run_dir)
    batches = [json.loads(plan_.evaluate_path(i).read_text()) for i in range(len(plan_.batches))]
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
        "findings": findings(metrics, list(merged.get("explanations", {})), config.dataset.masks_mark,
                             _warnings(task_log)),
    }
    if config.compare is not None:
        parts["drift"] = drift(metrics, parts["model"]["sha256"], config.compare)
    deployment_file = None
    if config.compare_model is not None:
        parts["deployment"], deployment_file = write_deployment(plan_, merged.get("ids", []))
        parts["verdict"] = with_deployment_checks(parts["verdict"], parts["deployment"], config.compare_model.severity)
    parts["frequency"], frequency_file = write_frequency(plan_)
    parts["arrays"] = {
        "explanations": {label: [str(plan_.explain_path(i, label).relative_to(run)) for i in range(len(plan_.batches))]
                         for label in labels},
        "gallery": write_gallery(plan_, merged.get("ids", [])), "deployment": deployment_file,
        "frequency": frequency_file}
    results = assemble(providers=[p for e in task_log for p in e.get("providers", [])], **parts)
    write_json(run / "results.json", results)
    try:
        render_run(run, config.formats, results)
    except PdfError as exc:  # everything else is written; say what is missing and why
        results["provenance"]["notes"].append(f"report.pdf not written: {exc}")
        write_json(run / "results.json", results)
    return results


def _warnings(task_log: list[dict]) -> dict[str, list[str]]:
    """Per method label, the warnings its explanations gave, batch by batch ("batch N: …")."""
    out: dict[str, list[str]] = {}
    for entry in task_log:
        for warning in entry.get("warnings", []):
            out.setdefault(entry["method"], []).append(f"batch {entry['batch']}: {warning}")
    return out


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
