"""Merging batch results into one run, and the drift of a run against an earlier one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onnxlens.evaluation.perturbation import on_finest_grid
from onnxlens.evaluation.registry import mean_of, standard_error
from onnxlens.pipelines.config import ConfigError


def _merge_entry(entries: list[dict], sizes: list[int]) -> dict:
    """One metric result of several batches: per-image lists joined (None for a batch that
    did not score its inputs), summaries recomputed."""
    out = dict(entries[0])
    for key in dict.fromkeys(k for e in entries for k in e):
        values = [e.get(key) for e in entries]
        if all(v is None or (isinstance(v, list) and len(v) == n) for v, n in zip(values, sizes)) and any(
                isinstance(v, list) for v in values):
            out[key] = [x for v, n in zip(values, sizes) for x in (v if v is not None else [None] * n)]
        elif all(isinstance(v, list) and v and isinstance(v[0], list) and all(len(row) == n for row in v)
                 for v, n in zip(values, sizes)):
            out[key] = [[x for v in values for x in v[k]] for k in range(len(values[0]))]
    out["mean"] = mean_of(out["per_image"])
    out["standard_error"] = standard_error(out["per_image"])
    for key in ("seconds", "forward_passes", "images"):
        out[key] = sum(e.get(key, 0) for e in entries)
    if "curves" in out:
        out["curves"] = on_finest_grid(out["curves"])
        scored = [c for c in out["curves"] if c is not None]
        out["curve"] = np.nanmean(np.asarray(scored, dtype=np.float64), axis=0).tolist() if scored else None
    for key in [k for k in out if k.endswith("_by_layer")]:
        rows = np.asarray(out[key[: -len("_by_layer")] + "_per_image"], dtype=np.float64)
        out[key] = np.nanmean(rows, axis=1).tolist()
    return out


def merge_batches(batches: list[dict], ids: list[list[str]]) -> dict:
    """The evaluate() results of consecutive batches as one result over all their inputs."""
    if not batches:
        return {"ids": [], "metrics": {}, "agreement": {"pairs": {}}}
    sizes = [len(i) for i in ids]
    merged = {k: v for k, v in batches[0].items() if k not in ("metrics", "agreement", "targets")}
    merged["ids"] = [i for chunk in ids for i in chunk]
    merged["n_images"] = len(merged["ids"])
    merged["targets"] = {label: [t for b in batches for t in b["targets"][label]] for label in batches[0]["targets"]}
    merged["metrics"] = {}
    for name, entry in batches[0]["metrics"].items():
        merged["metrics"][name] = {**entry, "results": {
            label: _merge_entry([b["metrics"][name]["results"][label] for b in batches], sizes)
            for label in entry["results"]}}
    pairs = {}
    for pair, measures in batches[0]["agreement"]["pairs"].items():
        pairs[pair] = {}
        for measure in measures:
            values = [v for b in batches for v in b["agreement"]["pairs"][pair][measure]["per_image"]]
            pairs[pair][measure] = {"mean": mean_of(values), "per_image": values}
    merged["agreement"] = {**batches[0]["agreement"], "pairs": pairs}
    return merged


def drift(metrics: dict, model_sha256: str, previous_run: Path) -> dict:
    """Each of this run's metric means (``metrics``, merged) beside the same mean in
    ``previous_run`` (an earlier run folder), the change, and whether the model or the verdict
    changed."""
    path = Path(previous_run) / "results.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot compare with {str(previous_run)!r}: {exc}") from None
    changes = {}
    for name, entry in metrics.items():
        old = before.get("evaluation", {}).get("metrics", {}).get(name, {}).get("results", {})
        for label, r in entry["results"].items():
            previous = old.get(label, {}).get("mean")
            current = r["mean"]
            change = None if previous is None or current is None else current - previous
            changes.setdefault(name, {})[label] = {"previous": previous, "current": current, "change": change}
    return {"previous_run": str(previous_run), "previous_created": before.get("created"),
            "model_changed": before.get("model", {}).get("sha256") != model_sha256,
            "verdict_before": before.get("verdict", {}).get("passed"), "metrics": changes}
