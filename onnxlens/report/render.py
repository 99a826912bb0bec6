"""A run folder's documents from its bundle alone: verdict.json, report.html, report.pdf.
The audit calls this when it finishes; ``onnxlens report RUN_DIR`` calls it on an old run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxlens.files import write_atomic, write_json
from onnxlens.bundle import BundleError, load_bundle
from onnxlens.report.figures import enlarged_uri, png_uri, tile_grid
from onnxlens.report.html import render_html
from onnxlens.report.overlay import blend


def gallery_rows(run_dir: Path, bundle: dict) -> dict | None:
    """The gallery the bundle names (gallery.npz): each picture and its overlay per method."""
    name = bundle["arrays"]["gallery"]
    if not name:
        return None
    path = Path(run_dir) / name
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the gallery {str(path)!r}: {exc}") from None
    colormap = bundle["config"].get("colormap", "jet")
    with data:
        methods = [str(m) for m in data["methods"]]
        rows = []
        for i, (item, picture) in enumerate(zip(data["ids"], data["pictures"])):
            cells = []
            for label in methods:
                heatmap, target = data[f"heatmap/{label}"][i], int(data[f"target/{label}"][i])
                cells.append(None if np.isnan(heatmap).all() else {
                    "method": label, "target": target,
                    "uri": enlarged_uri(blend(picture.astype(np.float64) / 255, heatmap, colormap))})
            rows.append({"id": str(item), "uri": enlarged_uri(picture), "cells": cells})
    return {"methods": methods, "rows": rows}


def deployment_rows(run_dir: Path, bundle: dict) -> dict | None:
    """The most-changed inputs of the deployed-vs-reference comparison (deployment.npz): each
    picture with the reference model's and the deployed model's overlay per method."""
    name = bundle["arrays"].get("deployment")
    if not name:
        return None
    colormap = bundle["config"].get("colormap", "jet")
    try:
        with np.load(Path(run_dir) / name, allow_pickle=False) as data:
            methods = [str(m) for m in data["methods"]]
            rows = []
            for i, (item, picture) in enumerate(zip(data["ids"], data["pictures"])):
                image = picture.astype(np.float64) / 255
                rows.append({"id": str(item), "uri": enlarged_uri(picture), "cells": [
                    {"method": label,
                     "reference_uri": enlarged_uri(blend(image, data[f"reference/{label}"][i], colormap)),
                     "deployed_uri": enlarged_uri(blend(image, data[f"deployed/{label}"][i], colormap))}
                    for label in methods]})
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"cannot read the comparison arrays {name!r}: {exc}") from None
    return {"methods": methods, "rows": rows}


def filter_images(run_dir: Path, bundle: dict) -> dict | None:
    """The first convolution's filters and their magnitude responses as two tiled pictures."""
    name = bundle["arrays"].get("frequency")
    if not name:
        return None
    try:
        with np.load(Path(run_dir) / name, allow_pickle=False) as data:
            filters, responses = data["filters"], data["responses"]
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"cannot read the frequency arrays {name!r}: {exc}") from None
    shown = filters[:, :3] if filters.shape[1] in (1, 3) else np.abs(filters).sum(axis=1, keepdims=True)
    return {"filters_uri": png_uri(tile_grid(shown, scale=8)), "responses_uri": png_uri(tile_grid(responses[:, None], scale=2))}


def render_run(run_dir: str | Path, formats: Sequence[str] = ("html", "pdf"), bundle: dict | None = None) -> list[Path]:
    """Write verdict.json and the ``formats`` (html, pdf) of the run in ``run_dir``; returns the
    paths written. The bundle is read (and validated) from results.json unless given."""
    run = Path(run_dir)
    bundle = bundle or load_bundle(run)
    written = [run / "verdict.json"]
    write_json(written[0], bundle["verdict"])
    if not {"html", "pdf"} & set(formats):
        return written
    page = render_html(bundle, gallery_rows(run, bundle), filter_images(run, bundle), deployment_rows(run, bundle))
    if "html" in formats:
        write_atomic(run / "report.html", page.encode())
        written.append(run / "report.html")
    if "pdf" in formats:
        from onnxlens.report.pdf import write_pdf

        written.append(write_pdf(page, run / "report.pdf"))
    return written
