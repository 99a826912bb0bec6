"""`onnxlens inspect` on the shipped models and on models built here."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from builders import conv_classifier
from conftest import MODELS

SHIPPED = sorted(MODELS.glob("*.onnx"))
METRICS = json.loads((MODELS / "metrics.json").read_text())


def test_models_are_shipped():
    assert {p.name for p in SHIPPED} == {"digits_cnn.onnx", "shapes_cnn.onnx"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_is_small(path):
    assert path.stat().st_size < 2 * 1024**2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_inspect_json_describes_shipped_model(path, cli):
    result = cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["schema"] == "onnxlens.inspect/1"
    assert info["file"] == path.name and len(info["sha256"]) == 64
    image = info["inputs"][0]
    assert image["role"] == "image" and image["layout"] == "NCHW"
    assert info["parameter_count"] > 1000 and info["op_histogram"]["Conv"] >= 3
    assert "matches" in info["verification"] or "identical" in info["verification"]
    assert info["backward"] == {"supported": True, "missing": {}, "reason": ""}


def test_inspect_json_is_stable(cli):
    path = MODELS / "digits_cnn.onnx"
    assert cli("inspect", path, "--json").stdout == cli("inspect", path, "--json").stdout


def test_shapes_model_has_trailing_softmax(cli):
    info = json.loads(cli("inspect", MODELS / "shapes_cnn.onnx", "--json").stdout)
    out = info["outputs"][0]
    assert out["activation"] == "Softmax" and out["logits"]
    assert out["shape"][1:] == [3]


def test_inspect_table_in_terminal(cli):
    result = cli("inspect", MODELS / "digits_cnn.onnx")
    assert result.returncode == 0, result.stderr
    for text in ("sha256", "NCHW", "Conv", "parameters", "logits"):
        assert text in result.stdout


@pytest.mark.parametrize("layout, channels", [("NCHW", 3), ("NHWC", 3), ("NHWC-reshape", 1)])
def test_inspect_models_built_in_tests(layout, channels, save, cli):
    result = cli("inspect", save(conv_classifier(layout, channels=channels)), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inputs"][0]["layout"] == layout.split("-")[0]


def test_hostile_strings_are_data(save, cli):
    model = conv_classifier()
    model.doc_string = "[bold red]<script>alert(1)</script>\x1b[2J"
    entry = model.metadata_props.add()
    entry.key, entry.value = "author", "[link=http://x]click[/link]"
    path = save(model)
    table = cli("inspect", path)
    assert table.returncode == 0, table.stderr
    assert "[bold red]<script>" in table.stdout and "[link=http://x]click[/link]" in table.stdout
    assert "\x1b[2J" not in table.stdout and "\\x1b[2J" in table.stdout
    info = json.loads(cli("inspect", path, "--json").stdout)
    assert info["doc_string"] == model.doc_string


def test_digits_samples_reproduce_recorded_accuracy():
    data = np.load(MODELS / "samples" / "digits" / "test.npz")
    session = ort.InferenceSession(str(MODELS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    acc = float((session.run(None, {"image": data["x"]})[0].argmax(1) == data["y"]).mean())
    assert acc == pytest.approx(METRICS["digits_cnn"]["test_accuracy"], abs=1e-9)
    assert acc > 0.9


def test_shapes_samples_carry_masks():
    data = np.load(MODELS / "samples" / "shapes" / "test.npz")
    n = len(data["y"])
    assert data["x"].shape == (n, 3, 64, 64)
    assert data["object_masks"].shape == data["watermark_masks"].shape == (n, 64, 64)
    assert data["object_masks"].any(axis=(1, 2)).all()
    marked = data["has_watermark"]
    assert marked.any() and (data["watermark_masks"].any(axis=(1, 2)) == marked).all()
    assert set(data["y"][marked]) == {list(data["classes"]).index(METRICS["shapes_cnn"]["watermark_class"])}


def test_inspect_reports_missing_backward_rules(save, cli):
    model = conv_classifier()
    model.graph.node[1].op_type = "Asinh"  # the activation: on the path from input to logits
    info = json.loads(cli("inspect", save(model), "--json").stdout)
    assert info["backward"]["supported"] is False and info["backward"]["missing"] == {"Asinh": ["relu"]}
    table = cli("inspect", save(model)).stdout
    assert "missing: Asinh (relu)" in table and "forward-only" in table


def test_every_option_help_reads_in_full(cli):
    """Rich markup would swallow a bracketed text such as [x0, y0, x1, y1]; every option's help
    shows as written (escapes removed), for every command."""
    import typer

    from onnxlens.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        shown = " ".join(cli(name, "--help", env={"COLUMNS": "2000"}).stdout.split())
        for param in command.params:
            if getattr(param, "help", None):
                assert " ".join(param.help.replace("\\[", "[").split()) in shown, (name, param.help)
