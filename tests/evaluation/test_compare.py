"""Comparing a model with its deployed form: agreement of predictions, scores and maps, most-
changed inputs first, thresholds as a verdict; a pair that does not match is refused."""

import json

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.evaluation.deployment import ComparisonError, compare_deployment

SHAPES = MODELS / "shapes_cnn.onnx"
DIGITS = MODELS / "digits_cnn.onnx"
METHODS = {name: (name, {}) for name in ("gradient", "gradcam", "lrp")}


def _x(rows=8):
    return np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:rows].astype(np.float32)


def test_a_model_agrees_with_itself_everywhere():
    engine = Explainer(SHAPES, device="cpu").engine
    result, maps = compare_deployment(engine, Explainer(SHAPES, device="cpu").engine, _x(4), METHODS)
    assert result["top1_agreement"] == 1.0 and result["score_deviation"]["max"] == 0.0
    for name in METHODS:
        for measure in ("spearman", "ssim", "dice"):
            assert result["methods"][name][measure]["worst"] == pytest.approx(1.0)
        np.testing.assert_array_equal(*maps[name])
    assert result["verdict"] == {"passed": True, "checks": []}


def test_int8_form_is_ranked_by_how_much_its_maps_changed(shapes_int8):
    result, _ = compare_deployment(Explainer(SHAPES, device="cpu").engine,
                                   Explainer(shapes_int8["qdq"], device="cpu").engine, _x(), METHODS,
                                   thresholds={"min_top1_agreement": 0.9, "min_spearman": 0.999})
    assert result["top1_agreement"] >= 0.9 and result["score_deviation"]["max"] > 0
    rows = result["per_input"]
    changed = [np.mean([row["agreement"][m]["spearman"] for m in METHODS]) for row in rows]
    assert changed == sorted(changed) and sorted(row["index"] for row in rows) == list(range(8))
    checks = {(c["threshold"], c["method"]): c["passed"] for c in result["verdict"]["checks"]}
    assert checks[("min_top1_agreement", None)] and not checks[("min_spearman", "gradient")]
    assert not result["verdict"]["passed"]


def test_a_pair_with_different_inputs_is_refused_naming_both():
    with pytest.raises(ComparisonError, match=r"reference 'image' \[batch, 3, 64, 64\], deployed 'image' "
                                              r"\[batch, 1, 32, 32\]"):
        compare_deployment(Explainer(SHAPES, device="cpu").engine, Explainer(DIGITS, device="cpu").engine, _x(2),
                           METHODS)


def test_unknown_threshold_is_refused():
    engine = Explainer(SHAPES, device="cpu").engine
    with pytest.raises(ComparisonError, match="unknown threshold"):
        compare_deployment(engine, engine, _x(2), METHODS, thresholds={"min_pearson": 0.5})


def test_cli_compare_writes_json_and_overlays_and_fails_on_a_threshold(shapes_int8, tmp_path, cli):
    out, overlays = tmp_path / "compare.json", tmp_path / "overlays"
    args = ["compare", SHAPES, shapes_int8["qoperator"], "--data", MODELS / "samples" / "shapes" / "test.npz",
            "--limit", "6", "--methods", "gradient,gradcam", "--out", out, "--overlays", overlays, "--top", "3"]
    result = cli(*args, "--threshold", "min_top1_agreement=0.9")
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["schema"] == "onnxlens.compare/1" and document["inputs"] == 6
    assert document["deployed"]["quantization"]["format"] == "QOperator"
    assert len(list(overlays.glob("*.png"))) == 3
    failing = cli(*args, "--threshold", "max_score_deviation=0")
    assert failing.returncode == 1 and "FAIL: max_score_deviation" in failing.stdout


def test_cli_compare_refuses_a_mismatched_pair_in_one_line(tmp_path, cli):
    result = cli("compare", SHAPES, DIGITS, "--data", MODELS / "samples" / "shapes" / "test.npz",
                 "--out", tmp_path / "c.json")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "different inputs" in result.stderr and "[batch, 1, 32, 32]" in result.stderr


def test_float16_form_agrees_with_its_float32_original(tmp_path):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    import onnx

    path = tmp_path / "half.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(SHAPES), keep_io_types=True), path)
    result, _ = compare_deployment(Explainer(SHAPES, device="cpu").engine, Explainer(path, device="cpu").engine,
                                   _x(4), METHODS, thresholds={"min_top1_agreement": 1.0, "min_spearman": 0.9})
    assert result["verdict"]["passed"], result["verdict"]


def test_audit_of_a_deployed_model_compares_it_with_its_reference(shapes_int8, tmp_path):
    """The audited model is the int8 form; compare_model is its float32 original: results.json
    carries the comparison, its thresholds join the verdict, the page shows the most-changed
    inputs side by side."""
    from onnxlens.pipelines import audit

    config = {"model": str(shapes_int8["qdq"]), "output": str(tmp_path / "run"), "baselines": False,
              "dataset": {"path": str(MODELS / "samples" / "shapes" / "test.npz"), "limit": 8},
              "methods": ["gradient", "gradcam"], "metrics": ["sparseness"], "batch_size": 4, "gallery_size": 3,
              "formats": ["html"],
              "compare_model": {"path": str(SHAPES), "thresholds": {"min_top1_agreement": 0.9, "min_ssim": 0.999}}}
    results = audit.audit_directly(config)
    deployment = results["deployment"]
    assert deployment["inputs"] == 8 and deployment["reference"]["file"] == "shapes_cnn.onnx"
    assert {row["id"] for row in deployment["per_input"]} == set(results["evaluation"]["ids"])
    checks = {(c["metric"], c["method"]): c["passed"] for c in results["verdict"]["checks"]}
    assert checks[("deployment:min_top1_agreement", "all")] and not checks[("deployment:min_ssim", "gradient")]
    assert not results["verdict"]["passed"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Deployed form against its reference" in page and page.count("deployed map of") == 3 * 2
    assert "QDQ · " in page and "clipped straight-through estimator" in page  # the model card says how
    with np.load(tmp_path / "run" / "deployment.npz") as data:
        assert data["pictures"].shape[0] == 3 and data["reference/gradcam"].shape == (3, 64, 64)


def test_audit_config_refuses_an_unknown_comparison_threshold(tmp_path):
    from onnxlens.pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="compare_model.thresholds: .*unknown threshold.*min_pearson"):
        load_config({"model": str(SHAPES), "dataset": {"path": str(tmp_path)}, "methods": ["gradient"],
                     "compare_model": {"path": str(SHAPES), "thresholds": {"min_pearson": 0.5}}})
