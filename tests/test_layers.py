"""The layer contracts (``[tool.importlinter]`` in pyproject.toml): each layer imports only from
the layers below it, reports read the results bundle and nothing that computes; and importing
one layer does not load the whole package."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_layer_contract_holds():
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_importing_the_report_layer_loads_no_runtime():
    code = ("import sys, onnxlens.report.render; print(sorted(m for m in ('onnxruntime', 'scipy', "
            "'onnxlens.methods', 'onnxlens.evaluation', 'onnxlens.pipelines') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
