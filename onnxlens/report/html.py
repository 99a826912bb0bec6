"""The audit page: one self-contained HTML file (images embedded, no scripts, no network)
rendered from a run's bundle — summary verdict first, then the model card, the gallery of
overlays, one section per metric family (figures, the metric means with the model-free
baselines beside each method, each metric's definition), agreement, drift and timings. The
same page, through its print stylesheet (A4, table of contents with page numbers, numbered
figures and tables), is the PDF. Every string from the model or the data is escaped (jinja2
autoescape)."""

from __future__ import annotations

import json

import numpy as np

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape

from onnxlens.bundle import FAMILIES, is_baseline
from onnxlens.report.figures import curves_uri, layers_uri, spectra_uri

TITLES = {"faithfulness": "Faithfulness", "localization": "Localization", "robustness": "Robustness",
          "complexity": "Complexity", "sanity": "Sanity checks", "checks": "Conservation and cost"}
CURVES = {"deletion": ("Deletion (lower is better)", "fraction of pixels removed",
                       "Deletion: mean class probability as the most relevant pixels are removed first; "
                       "a faithful map makes it fall fast. Dashed: model-free baselines."),
          "insertion": ("Insertion (higher is better)", "fraction of pixels inserted",
                        "Insertion: mean class probability as the most relevant pixels are restored into "
                        "a blurred image; a faithful map makes it rise fast. Dashed: model-free baselines.")}

def breakable(text) -> Markup:
    """``text`` escaped, with line-break opportunities after ``_``, ``:``, ``.`` and ``/`` so
    long names wrap inside narrow table columns instead of overflowing the page."""
    out = str(escape(text))
    for sep in "_:./":
        out = out.replace(sep, sep + "<wbr>")
    return Markup(out)


_TEMPLATES = Environment(loader=PackageLoader("onnxlens.report", "templates"), autoescape=True)
_TEMPLATES.filters["breakable"] = breakable


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def _family_table(family: str, metrics: dict) -> dict | None:
    entries = {name: e for name, e in metrics.items() if e["family"] == family}
    if not entries:
        return None
    columns = list(dict.fromkeys(label for e in entries.values() for label in e["results"]))
    columns.sort(key=is_baseline)  # methods first, baselines after
    rows = []
    for name, entry in entries.items():
        results = entry["results"]
        higher = next((r.get("higher_is_better") for r in results.values()), None)
        means = {c: results[c]["mean"] for c in columns if c in results and results[c].get("mean") is not None}
        best = (max if higher else min)(means.values()) if means and higher is not None and len(means) > 1 else None
        rows.append({"name": name, "summary": entry["summary"],
                     "arrow": {True: "↑", False: "↓"}.get(higher, ""),
                     "cells": [{"text": _with_error(results.get(c, {})) if c in means else "–",
                                "baseline": is_baseline(c),
                                "best": best is not None and means.get(c) == best} for c in columns]})
    return {"family": family, "title": TITLES.get(family, family), "columns": columns, "rows": rows, "figures": [],
            "caption": f"{TITLES.get(family, family)}: mean over the inputs per method ± its standard error "
                       "(↑ higher is better, ↓ lower); model-free baselines in italics; the best value of each row "
                       f"in bold.{_subset_note(entries)}"}


def _with_error(result: dict) -> str:
    error = result.get("standard_error")
    return _fmt(result["mean"]) + ("" if error is None else f" ± {error:.2g}")


def _subset_note(entries: dict) -> str:
    """Says which metrics scored the model-free baselines on fewer inputs than the methods."""
    counts: dict[str, tuple[int, int]] = {}
    for name, entry in entries.items():
        methods = [r.get("images") or 0 for label, r in entry["results"].items() if not is_baseline(label)]
        baselines = [r.get("images") or 0 for label, r in entry["results"].items() if is_baseline(label)]
        if methods and baselines and max(baselines) < max(methods):
            counts[name] = (max(baselines), max(methods))
    if not counts:
        return ""
    scored, total = next(iter(counts.values()))
    return (f" Model-free baselines were scored on {scored} of the {total} inputs, spread evenly, by "
            f"{', '.join(counts)} (baseline_images in the configuration).")


def _figures(family: str, metrics: dict) -> list[dict]:
    figures = []
    if family == "faithfulness":
        for name, (title, xlabel, caption) in CURVES.items():
            lines = {label: r["curve"] for label, r in metrics.get(name, {}).get("results", {}).items() if r.get("curve")}
            if lines:
                figures.append({"title": title, "caption": caption,
                                "uri": curves_uri(title, lines, xlabel, "class probability")})
    randomization = metrics.get("model_randomization", {}).get("results", {}) if family == "sanity" else {}
    if randomization:
        first = next(iter(randomization.values()))
        series = {label: r["spearman_abs_by_layer"] for label, r in randomization.items()}
        mode = first.get("mode", "cascading")
        title = f"Sanity check: {mode} randomization"
        figures.append({"title": title, "uri": layers_uri(title, series, first["layers"]),
                        "caption": f"Spearman correlation of |map| with the original map after {mode} "
                                   "randomization of the weights, layer by layer from the output "
                                   "(Adebayo et al., 2018): a map that stays high ignores the weights."})
    return figures


def render_html(bundle: dict, gallery: dict | None = None, filters: dict | None = None,
                deployment_gallery: dict | None = None) -> str:
    """The page of a run's ``bundle`` (results.json), its ``gallery`` (``{"methods": [...],
    "rows": [{"id", "uri", "cells": [{"method", "target", "uri"} or None per method]}]}``), its
    first-layer ``filters`` (``{"filters_uri", "responses_uri"}``) and the most-changed inputs
    of a deployed-vs-reference comparison (``{"methods", "rows": [{"id", "uri", "cells":
    [{"method", "reference_uri", "deployed_uri"}]}]}``)."""
    evaluation = bundle["evaluation"]
    metrics = evaluation.get("metrics", {})
    families = []
    for family in FAMILIES:
        table = _family_table(family, metrics)
        if table:
            table["figures"] = _figures(family, metrics)
            families.append(table)
    agreement = evaluation.get("agreement")
    agreement = agreement if agreement and agreement.get("pairs") else None
    sections = [("summary", "Summary"), ("model", "Model card")]
    sections += [("explanations", "Explanations")] if gallery else []
    sections += [(t["family"], t["title"]) for t in families]
    frequency = bundle.get("frequency")
    if frequency and frequency["maps"]:
        frequency = {**frequency, "spectra_uri": spectra_uri(
            "Radial power spectrum of the maps", {k: (v["frequencies"], v["power"]) for k, v in frequency["maps"].items()})}
        if frequency["first_layer"]:
            shares = frequency["first_layer"]["high_frequency_share"]
            frequency["first_layer"] = {**frequency["first_layer"], "mean": float(np.mean(shares)),
                                        "min": float(np.min(shares)), "max": float(np.max(shares))}
    else:
        frequency = None
    sections += [("frequency", "Frequency analysis")] if frequency else []
    sections += [("agreement", "Agreement between maps")] if agreement else []
    sections += [("deployment", "Deployed form against its reference")] if bundle.get("deployment") else []
    sections += [("drift", "Drift")] if bundle.get("drift") else []
    sections += [("timings", "Timings and provenance")]
    config = bundle["config"]
    return _TEMPLATES.get_template("report.html.j2").render(
        **{"drift": None, "deployment": None, **{k: v for k, v in bundle.items() if k != "frequency"}},
        sections=[{"id": i, "title": t} for i, t in sections], families=families,
        agreement=agreement, gallery=gallery, colormap=config.get("colormap", "jet"), frequency=frequency,
        filters=filters, deployment_gallery=deployment_gallery,
        config_rows=[(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in config.items()])
