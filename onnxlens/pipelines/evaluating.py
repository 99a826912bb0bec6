"""The evaluate step of an audit: one batch's stored explanations scored by ``evaluate`` with
the configured metrics (its defaults where the configuration names none)."""

from __future__ import annotations

import json

import numpy as np

from onnxlens.evaluation import evaluate
from onnxlens.files import write_json
from onnxlens.methods import Explanation
from onnxlens.pipelines.run_plan import RunPlan, digest, load


def stored_explanation(plan_: RunPlan, index: int, label: str) -> tuple[str, np.ndarray | None, Explanation | None]:
    """(key, row indices, Explanation) of a stored batch result; (key, None, None) when it
    holds no rows."""
    with np.load(plan_.explain_path(index, label), allow_pickle=False) as data:
        key = str(data["key"])
        if "attribution" not in data.files:
            return key, None, None
        return key, data["rows"], Explanation.from_arrays(data)


def _baseline_rows(plan_: RunPlan, ids: list[str], limit: int | None) -> list[int] | None:
    """Which of a batch's inputs (``ids``) the model-free baselines are scored on: those among
    ``limit`` positions spread evenly over the run's items (None: every input)."""
    total = len(plan_.items)
    if limit is None or limit >= total:
        return None
    chosen = {int(p) for p in np.arange(limit) * total // limit}
    position = {item["id"]: i for i, item in enumerate(plan_.items)}
    return [row for row, item_id in enumerate(ids) if position[item_id] in chosen]


def evaluate_batch(plan_: RunPlan, index: int) -> dict:
    """Evaluate the stored explanations of batch ``index`` (the inputs every method explained)
    unless a result with the same key is already in the run folder; returns the log entry."""
    config, explainer, batch = load(plan_, index)
    stored = {label: stored_explanation(plan_, index, label) for label in config.method_labels()}
    with_rows = {label: (rows.tolist(), e) for label, (_, rows, e) in stored.items() if e is not None}
    common = sorted(set.intersection(*(set(r) for r, _ in with_rows.values()))) if with_rows else []
    masks_digest = batch.masks.tobytes() if batch.masks is not None else b""
    baseline_rows = _baseline_rows(plan_, [batch.ok[r].id for r in common], config.baseline_images)
    key = digest([key for key, _, _ in stored.values()], [(m.name, m.params) for m in config.metrics],
                 masks_digest, config.baselines, config.seed, common, baseline_rows)
    path = plan_.evaluate_path(index)
    if path.exists() and json.loads(path.read_text()).get("key") == key:
        return {"batch": index, "status": "reused"}
    result = {"key": key, "ids": [batch.ok[r].id for r in common], "results": None}
    if common:
        explanations = {label: e.take([rows.index(r) for r in common]) for label, (rows, e) in with_rows.items()}
        result["results"] = evaluate(explainer.engine, batch.x[common], explanations,
                                     [m.name for m in config.metrics] or None,
                                     batch.masks[common] if batch.masks is not None else None,
                                     params={m.name: m.params for m in config.metrics if m.params},
                                     seed=config.seed, baseline_rows=baseline_rows,
                                     **({} if config.baselines else {"baselines": ()}))
    write_json(path, result)
    return {"batch": index, "status": "computed"}
