"""The onnxlens command line: one module per command, each parsing its options and printing its
results (the work is done by the layers below). Errors print one line on stderr and exit
non-zero: 1 for bad input, 3 for an internal error (``ONNXLENS_DEBUG=1`` shows the traceback),
5 when an audit's verdict fails."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from onnxlens.cli import audit, compare, distill, evaluate, explain, inspect_model, report, tcav
from onnxlens.cli.common import one_line
from onnxlens.errors import OnnxLensError

EXIT_ERROR = 1
EXIT_INTERNAL = 3

app = typer.Typer(
    name="onnxlens",
    help="Explain and audit image CNNs exported to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Explain and audit image CNNs exported to ONNX."""


for _command in (inspect_model.inspect, explain.explain, evaluate.evaluate, compare.compare, tcav.tcav,
                 distill.distill, audit.audit, audit.serve, report.report):
    app.command()(_command)


def main() -> None:
    """Console entry point: runs the app, turning errors into one line on stderr."""
    # Only onnxlens speaks on stderr: library warnings (numpy's overflow or invalid-value
    # notes among them) stay quiet, and non-finite results are refused explicitly.
    warnings.simplefilter("ignore")
    try:
        app()
    except OnnxLensError as exc:
        print(f"onnxlens: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # the no-traceback contract covers our own bugs too
        if os.environ.get("ONNXLENS_DEBUG"):
            raise
        print(f"onnxlens: internal error: {type(exc).__name__}: {one_line(str(exc))} "
              "(set ONNXLENS_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
