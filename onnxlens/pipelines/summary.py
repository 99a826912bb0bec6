"""Merging batch results into one run, the verdict, and a minimal HTML summary (the report
issue's renderer takes over from the same results.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from jinja2 import Environment

from onnxlens.pipelines.audit import EXIT_VERDICT_FAILED, write_atomic
from onnxlens.pipelines.config import ConfigError


def _mean(values) -> float | None:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else None


def _merge_entry(entries: list[dict], sizes: list[int]) -> dict:
    """One metric result of several batches: per-image lists joined, summaries recomputed."""
    out = dict(entries[0])
    for key, first in entries[0].items():
        if isinstance(first, list) and all(len(e[key]) == n for e, n in zip(entries, sizes)):
            out[key] = [v for e in entries for v in e[key]]
        elif (isinstance(first, list) and first and isinstance(first[0], list)
              and all(len(row) == n for e, n in zip(entries, sizes) for row in e[key])):
            out[key] = [[v for e in entries for v in e[key][k]] for k in range(len(first))]
    out["mean"] = _mean(out["per_image"])
    out["seconds"] = sum(e.get("seconds", 0.0) for e in entries)
    if "curves" in out:
        out["curve"] = np.nanmean(np.asarray(out["curves"], dtype=np.float64), axis=0).tolist()
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
            pairs[pair][measure] = {"mean": _mean(values), "per_image": values}
    merged["agreement"] = {**batches[0]["agreement"], "pairs": pairs}
    return merged


def verdict(config, merged: dict, failed: dict) -> dict:
    """Each threshold checked against the metric's mean for each method it names."""
    checks = []
    labels = config.method_labels()
    for rule in config.thresholds:
        entry = merged.get("metrics", {}).get(rule.metric)
        for label in [rule.method] if rule.method else labels:
            value = None if entry is None else entry["results"].get(label, {}).get("mean")
            ok = value is not None and (rule.max is None or value <= rule.max) and (rule.min is None or value >= rule.min)
            checks.append({"metric": rule.metric, "method": label, "value": value, "max": rule.max, "min": rule.min,
                           "severity": rule.severity, "passed": ok, "description": rule.description,
                           "why": None if value is not None else "the metric was not computed for this method"})
    passed = all(c["passed"] for c in checks if c["severity"] == "fail")
    return {"passed": passed, "exit_code": 0 if passed else EXIT_VERDICT_FAILED, "checks": checks,
            "warnings": [c for c in checks if c["severity"] == "warn" and not c["passed"]],
            "failed_items": len(failed)}


def drift(results: dict, previous_run: Path) -> dict:
    """Each metric mean of this run beside the same mean in ``previous_run`` (an earlier run
    folder), the change, and whether the model or the verdict changed."""
    path = Path(previous_run) / "results.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot compare with {str(previous_run)!r}: {exc}") from None
    changes = {}
    for name, entry in results["evaluation"].get("metrics", {}).items():
        old = before.get("evaluation", {}).get("metrics", {}).get(name, {}).get("results", {})
        for label, r in entry["results"].items():
            previous = old.get(label, {}).get("mean")
            current = r["mean"]
            change = None if previous is None or current is None else current - previous
            changes.setdefault(name, {})[label] = {"previous": previous, "current": current, "change": change}
    return {"previous_run": str(previous_run), "previous_created": before.get("created"),
            "model_changed": before.get("model", {}).get("sha256") != results["model"].get("sha256"),
            "verdict_before": before.get("verdict", {}).get("passed"), "metrics": changes}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onnxlens audit · {{ model.file }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
.fail{color:#a00;font-weight:bold}.pass{color:#070;font-weight:bold}.warn{color:#a60;font-weight:bold}</style></head>
<body><h1>Audit of {{ model.file }}</h1>
<p>Verdict: {% if verdict.passed %}<span class="pass">PASSED</span>{% else %}<span class="fail">FAILED</span>{% endif %}
— {{ items.evaluated }} of {{ items.total }} inputs evaluated, {{ items.failed|length }} failed.</p>
{% if verdict.checks %}<table><tr><th>check</th><th>method</th><th>value</th><th>limit</th><th>result</th></tr>
{% for c in verdict.checks %}<tr><td>{{ c.description or c.metric }}</td><td>{{ c.method }}</td>
<td>{{ "%.4g"|format(c.value) if c.value is not none else "–" }}</td>
<td>{% if c.max is not none %}≤ {{ c.max }}{% endif %}{% if c.min is not none %} ≥ {{ c.min }}{% endif %}</td>
<td class="{{ 'pass' if c.passed else ('warn' if c.severity == 'warn' else 'fail') }}">{{ 'ok' if c.passed else c.severity }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Model</h2><p>sha256 {{ model.sha256 }} · producer {{ model.producer.name }} {{ model.producer.version }} · canonical opset {{ model.canonical_opset }}</p>
<h2>Metric means</h2><table><tr><th>metric</th>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, entry in evaluation.metrics.items() %}<tr><td>{{ name }}</td>{% for c in columns %}
<td>{% set r = entry.results.get(c) %}{{ "%.4g"|format(r.mean) if r and r.mean is not none else "–" }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if drift %}<h2>Drift since {{ drift.previous_created }}</h2>
<p>{{ "The model changed (another sha256)." if drift.model_changed else "Same model." }}
Verdict then: {{ "passed" if drift.verdict_before else "failed" }}.</p>
<table><tr><th>metric</th><th>method</th><th>then</th><th>now</th><th>change</th></tr>
{% for name, by in drift.metrics.items() %}{% for label, d in by.items() %}<tr><td>{{ name }}</td><td>{{ label }}</td>
<td>{{ "%.4g"|format(d.previous) if d.previous is not none else "–" }}</td><td>{{ "%.4g"|format(d.current) if d.current is not none else "–" }}</td>
<td>{{ "%+.3g"|format(d.change) if d.change is not none else "–" }}</td></tr>{% endfor %}{% endfor %}</table>{% endif %}
{% if items.failed %}<h2>Failed inputs</h2><ul>{% for k, v in items.failed.items() %}<li>{{ k }}: {{ v }}</li>{% endfor %}</ul>{% endif %}
{% if provenance.notes %}<h2>Notes</h2><ul>{% for n in provenance.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
<p>onnxlens {{ onnxlens_version }} · {{ created }} · tasks computed {{ provenance.tasks_computed }}, reused {{ provenance.tasks_reused }}</p>
</body></html>
"""


def write_summary(path: Path, results: dict) -> None:
    """A self-contained HTML page of the verdict and the metric means (every string escaped)."""
    columns = list(dict.fromkeys(label for entry in results["evaluation"].get("metrics", {}).values()
                                 for label in entry["results"]))
    html = Environment(autoescape=True).from_string(_PAGE).render(columns=columns, **{"drift": None, **results})
    write_atomic(path, html.encode())
