"""The audit page: one self-contained HTML file (images embedded, no network) rendered from a
run's results — verdict first, then the model card, the gallery of overlays, faithfulness
curves and the metric tables with the model-free baselines beside each method. Every string
that came from the model or the data is escaped (jinja2 autoescape)."""

from __future__ import annotations

from jinja2 import Environment

from onnxlens.report.figures import curves_uri, layers_uri

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onnxlens audit · {{ model.file }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
.fail{color:#a00;font-weight:bold}.pass{color:#070;font-weight:bold}.warn{color:#a60;font-weight:bold}
.baseline{color:#555;font-style:italic}figure{display:inline-block;margin:.3em}figcaption{font-size:.8em}</style></head>
<body><h1>Audit of {{ model.file }}</h1>
<p>Verdict: {% if verdict.passed %}<span class="pass">PASSED</span>{% else %}<span class="fail">FAILED</span>{% endif %}
— {{ items.evaluated }} of {{ items.total }} inputs evaluated, {{ items.failed|length }} failed.</p>
{% if verdict.checks %}<table><tr><th>check</th><th>method</th><th>value</th><th>limit</th><th>result</th></tr>
{% for c in verdict.checks %}<tr><td>{{ c.description or c.metric }}</td><td>{{ c.method }}</td>
<td>{{ "%.4g"|format(c.value) if c.value is not none else "–" }}</td>
<td>{% if c.max is not none %}≤ {{ c.max }}{% endif %}{% if c.min is not none %} ≥ {{ c.min }}{% endif %}</td>
<td class="{{ 'pass' if c.passed else ('warn' if c.severity == 'warn' else 'fail') }}">{{ 'ok' if c.passed else c.severity }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Model</h2><table>
<tr><td>file</td><td>{{ model.file }}</td></tr><tr><td>sha256</td><td>{{ model.sha256 }}</td></tr>
<tr><td>producer</td><td>{{ model.producer.name }} {{ model.producer.version }}</td></tr>
<tr><td>opset (canonical)</td><td>{{ model.canonical_opset }}</td></tr>
<tr><td>doc string</td><td>{{ model.doc_string }}</td></tr>
<tr><td>onnxlens</td><td>{{ onnxlens_version }} · {{ created }}</td></tr></table>
{% if gallery %}<h2>Explanations</h2><p>Each input beside its {{ colormap }} overlay of |map| per method.</p>{% for row in gallery %}<div><b>{{ row.id }}</b><br>{% for cell in row.cells %}
<figure><img src="{{ cell.uri }}" alt="{{ cell.method }} overlay of {{ row.id }}"><figcaption>{{ cell.method }} · class {{ cell.target }}</figcaption></figure>{% endfor %}</div>{% endfor %}{% endif %}
{% if curves %}<h2>Curves</h2>{% for c in curves %}<figure><img src="{{ c.uri }}" alt="{{ c.title }}"><figcaption>{{ c.title }}</figcaption></figure>{% endfor %}{% endif %}
<h2>Metric means</h2><p>Columns in italics are model-free saliency baselines: a method that does not beat them says nothing about the model.</p>
<table><tr><th>metric</th>{% for c in columns %}<th class="{{ 'baseline' if c.startswith('baseline:') else '' }}">{{ c }}</th>{% endfor %}</tr>
{% for name, entry in evaluation.metrics.items() %}<tr><td>{{ name }}</td>{% for c in columns %}
<td>{% set r = entry.results.get(c) %}{{ "%.4g"|format(r.mean) if r and r.mean is not none else "–" }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if agreement %}<h2>Agreement between maps (means)</h2><table><tr><th>pair</th>{% for m in agreement.measures %}<th>{{ m }}</th>{% endfor %}</tr>
{% for pair, values in agreement.pairs.items() %}<tr><td>{{ pair }}</td>{% for m in agreement.measures %}
<td>{{ "%.3g"|format(values[m].mean) if values[m].mean is not none else "–" }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% if drift %}<h2>Drift since {{ drift.previous_created }}</h2>
<p>{{ "The model changed (another sha256)." if drift.model_changed else "Same model." }}
Verdict then: {{ "passed" if drift.verdict_before else "failed" }}.</p>
<table><tr><th>metric</th><th>method</th><th>then</th><th>now</th><th>change</th></tr>
{% for name, by in drift.metrics.items() %}{% for label, d in by.items() %}<tr><td>{{ name }}</td><td>{{ label }}</td>
<td>{{ "%.4g"|format(d.previous) if d.previous is not none else "–" }}</td><td>{{ "%.4g"|format(d.current) if d.current is not none else "–" }}</td>
<td>{{ "%+.3g"|format(d.change) if d.change is not none else "–" }}</td></tr>{% endfor %}{% endfor %}</table>{% endif %}
{% if items.failed %}<h2>Failed inputs</h2><ul>{% for k, v in items.failed.items() %}<li>{{ k }}: {{ v }}</li>{% endfor %}</ul>{% endif %}
{% if provenance.notes %}<h2>Notes</h2><ul>{% for n in provenance.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% if timings %}<h2>Timings</h2><table><tr><th>method</th><th>seconds</th><th>per input</th></tr>
{% for label, t in timings.explain.items() %}<tr><td>{{ label }}</td><td>{{ "%.3g"|format(t.seconds) }}</td>
<td>{{ "%.3g"|format(t.per_input) if t.per_input is not none else "–" }}</td></tr>{% endfor %}</table>
<table><tr><th>metric</th><th>seconds</th></tr>{% for name, sec in timings.evaluate.items() %}<tr><td>{{ name }}</td>
<td>{{ "%.3g"|format(sec) }}</td></tr>{% endfor %}</table>{% endif %}
<p>Tasks computed {{ provenance.tasks_computed }}, reused from an earlier run {{ provenance.tasks_reused }}.</p>
</body></html>
"""

CURVES = {"deletion": ("Deletion (lower is better)", "fraction of pixels removed"),
          "insertion": ("Insertion (higher is better)", "fraction of pixels inserted")}


def render_html(results: dict, gallery: list[dict] | None = None, colormap: str = "jet") -> str:
    """The page for a run's ``results`` (results.json) and a ``gallery`` of
    ``{"id", "cells": [{"method", "target", "uri"}]}`` rows (overlays drawn in ``colormap``)."""
    metrics = results["evaluation"].get("metrics", {})
    columns = list(dict.fromkeys(label for entry in metrics.values() for label in entry["results"]))
    curves = []
    for name, (title, xlabel) in CURVES.items():
        if name in metrics:
            lines = {label: r["curve"] for label, r in metrics[name]["results"].items() if r.get("curve")}
            if lines:
                curves.append({"title": title, "uri": curves_uri(title, lines, xlabel, "class probability")})
    randomization = metrics.get("model_randomization", {}).get("results", {})
    if randomization:
        first = next(iter(randomization.values()))
        series = {label: r["spearman_abs_by_layer"] for label, r in randomization.items()}
        title = f"Sanity check: {first.get('mode', 'cascading')} randomization"
        curves.append({"title": title, "uri": layers_uri(title, series, first["layers"])})
    agreement = results["evaluation"].get("agreement")
    return Environment(autoescape=True).from_string(_PAGE).render(
        columns=columns, curves=curves, gallery=gallery or [],
        agreement=agreement if agreement and agreement.get("pairs") else None,
        colormap=colormap, **{"drift": None, "timings": None, **results})
