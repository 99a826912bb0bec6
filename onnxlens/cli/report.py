"""``onnxlens report``: a run's documents rendered from its bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxlens.errors import OnnxLensError


def report(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run folder written by onnxlens audit.")] = None,
    formats: Annotated[str, typer.Option("--formats", help="Documents to write: html, pdf (comma-separated).")] = "html,pdf",
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON Schema of results.json and exit.")] = False,
) -> None:
    """Render a run's verdict.json, report.html and report.pdf from its results.json and the
    arrays beside it (neither the model nor the dataset is needed)."""
    from onnxlens.bundle import json_schema
    from onnxlens.report.render import render_run

    if schema:
        typer.echo(json.dumps(json_schema(), indent=1))
        return
    if run_dir is None:
        raise OnnxLensError("give a run folder (or --schema)")
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(chosen) - {"html", "pdf"})
    if unknown:
        raise OnnxLensError(f"unknown report format(s) {', '.join(map(repr, unknown))}; choose from html, pdf")
    for path in render_run(run_dir, chosen):
        typer.echo(f"wrote {path}")
