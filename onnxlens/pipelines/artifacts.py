"""What an audit writes beside its bundle for the report to show: the gallery (pictures and
maps), the frequency analysis's arrays, and the deployed-vs-reference comparison's most-changed
inputs. Each returns what the bundle keeps and the file it wrote (relative to the run folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlens.evaluation.deployment import compare_deployment
from onnxlens.evaluation.frequency import frequency_analysis
from onnxlens.files import npz_bytes, write_atomic
from onnxlens.methods import Explainer
from onnxlens.methods.explanation import displayable
from onnxlens.pipelines.run_plan import RunPlan, explainer_for, load

GALLERY = "gallery.npz"
FREQUENCY = "frequency.npz"
DEPLOYMENT = "deployment.npz"


def write_frequency(plan_: RunPlan, cutoff: float = 0.5) -> tuple[dict, str | None]:
    """The run's frequency analysis (``frequency_analysis``) over every stored map: the summary
    for the bundle, and the first convolution's filters and responses in frequency.npz."""
    heatmaps = {}
    for label in plan_.audit.method_labels():
        stored = []
        for index in range(len(plan_.batches)):
            with np.load(plan_.explain_path(index, label), allow_pickle=False) as data:
                if "heatmap" in data.files:
                    stored.append(data["heatmap"])
        if stored:
            heatmaps[label] = np.concatenate(stored)
    summary, arrays = frequency_analysis(heatmaps, explainer_for(plan_.audit).engine, cutoff)
    if arrays is None:
        return summary, None
    write_atomic(Path(plan_.run_dir) / FREQUENCY, npz_bytes(**arrays))
    return summary, FREQUENCY


def write_gallery(plan_: RunPlan, evaluated: list[str]) -> str | None:
    """The first ``gallery_size`` evaluated inputs as displayable pictures, with each method's
    heatmap and target, into gallery.npz (what the report shows; None when empty). An input a
    method did not explain has an all-NaN heatmap; target −1 is a sequence's decoded path."""
    config = plan_.audit
    wanted = evaluated[: config.gallery_size]
    labels = config.method_labels()
    ids, pictures, maps = [], [], {label: [] for label in labels}
    for index in range(len(plan_.batches)):
        if len(ids) >= len(wanted):
            break
        if not {plan_.items[j]["id"] for j in plan_.batches[index]} & set(wanted):
            continue
        _, explainer, batch = load(plan_, index)
        stored = {}
        for label in labels:
            path = plan_.explain_path(index, label)
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


def write_deployment(plan_: RunPlan, evaluated: list[str]) -> tuple[dict, str]:
    """The audited model (the deployed form) compared with ``compare_model`` (its reference) on
    the first evaluated inputs: the comparison for results.json, and the pictures and both
    models' maps of the ``gallery_size`` most-changed inputs in deployment.npz."""
    config = plan_.audit
    wanted = set(evaluated[: config.compare_model.limit])
    ids, rows = [], []
    for index in range(len(plan_.batches)):
        if len(ids) >= len(wanted):
            break
        _, explainer, batch = load(plan_, index)
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
