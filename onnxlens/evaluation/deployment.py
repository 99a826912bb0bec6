"""Does a deployed form of a model (int8, float16) look where the reference model looks?

Both models run on the same inputs: top-1 agreement, the deviation of their scores (logits by
default), and for each method the per-image agreement of the two maps — each model explaining
the reference model's predicted class, so the maps answer the same question. Inputs are
ranked by how much their maps changed (lowest mean Spearman correlation first). Thresholds
turn the comparison into a pass/fail verdict a deployment can be held to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onnxlens.errors import OnnxLensError, quote
from onnxlens.evaluation.agreement import HIGHER_IS_CLOSER, compare
from onnxlens.methods.registry import run_method

SCHEMA = "onnxlens.compare/1"
MEASURES = ("spearman", "ssim", "dice")
#: threshold key → what it bounds (a minimum on agreement, a maximum on deviation)
THRESHOLDS = {
    "min_top1_agreement": "share of inputs whose predicted class the two models agree on",
    "max_score_deviation": "largest |reference − deployed| score over inputs and classes",
    "min_spearman": "mean Spearman correlation of the two maps, for every method",
    "min_ssim": "mean SSIM of the two maps, for every method",
    "min_dice": "mean Dice of the two maps' top pixels, for every method",
}


class ComparisonError(OnnxLensError):
    """A reference/deployed pair that cannot be compared, or an unknown threshold."""


def check_pair(reference, deployed) -> None:
    """Refuse a pair whose inputs or class scores differ in shape, naming both."""
    ref_in, dep_in = reference.spec.image_input, deployed.spec.image_input
    if len(ref_in.shape) != len(dep_in.shape) or any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(ref_in.shape[1:], dep_in.shape[1:])):
        raise ComparisonError(f"the models take different inputs: reference {quote(ref_in.name)} "
                              f"{_shape(ref_in.shape)}, deployed {quote(dep_in.name)} {_shape(dep_in.shape)}")
    if ref_in.layout != dep_in.layout:
        raise ComparisonError(f"the models take different layouts: reference {ref_in.layout}, deployed {dep_in.layout}")
    ref_out, dep_out = reference.spec.output(), deployed.spec.output()
    if ref_out.shape and dep_out.shape and ref_out.shape[-1] != dep_out.shape[-1]:
        raise ComparisonError(f"the models give different outputs: reference {quote(ref_out.name)} "
                              f"{_shape(ref_out.shape)}, deployed {quote(dep_out.name)} {_shape(dep_out.shape)}")


def compare_deployment(reference, deployed, x: np.ndarray, methods: Mapping[str, tuple[str, dict]],
                       measures: Sequence[str] = MEASURES, thresholds: Mapping[str, float] | None = None,
                       fraction: float = 0.1, progress: Callable[[str, int, int], None] | None = None,
                       ) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Compare two engines on inputs ``x``; ``methods``: label → (method name, parameters). Returns a
    JSON-ready document (schema ``onnxlens.compare/1``, with a ``verdict``) and, per method,
    the two models' heatmaps (N×H×W each) for figures."""
    thresholds = dict(thresholds or {})
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise ComparisonError(f"unknown threshold(s) {', '.join(map(quote, unknown))}; "
                              f"known: {', '.join(THRESHOLDS)}")
    check_pair(reference, deployed)
    x = reference.check_input(x)
    deployed.check_input(x)
    ref_scores = reference.forward(x)[reference.score_name()].reshape(len(x), -1).astype(np.float64)
    dep_scores = deployed.forward(x)[deployed.score_name()].reshape(len(x), -1).astype(np.float64)
    if ref_scores.shape != dep_scores.shape:
        raise ComparisonError(f"the models score {ref_scores.shape[1]} and {dep_scores.shape[1]} classes")
    target = ref_scores.argmax(axis=1)
    deviation = np.abs(ref_scores - dep_scores).max(axis=1)
    per_method, maps, warnings = {}, {}, []
    for done, (label, (name, params)) in enumerate(methods.items()):
        if progress:
            progress(f"compare · {label}", done, len(methods))
        ref_e = run_method(name, reference, x, target, **params)
        dep_e = run_method(name, deployed, x, target, **params)
        per_method[label] = compare(ref_e.heatmap, dep_e.heatmap, measures, fraction)
        maps[label] = (ref_e.heatmap, dep_e.heatmap)
        warnings += [f"{label} on the deployed model: {w}" for w in dep_e.warnings]
    if progress:
        progress("compare", len(methods), len(methods))
    order = np.argsort(_closeness(per_method, maps, len(x)), kind="stable")
    result = {
        "schema": SCHEMA,
        "inputs": len(x),
        "top1_agreement": float((target == dep_scores.argmax(axis=1)).mean()),
        "score_deviation": {"max": float(deviation.max()), "mean": float(deviation.mean())},
        "measures": list(measures),
        "warnings": warnings,
        "methods": {name: {m: _summary(values[m], HIGHER_IS_CLOSER[m]) for m in measures}
                    for name, values in per_method.items()},
        "per_input": [{
            "index": int(i),
            "reference_class": int(target[i]),
            "deployed_class": int(dep_scores[i].argmax()),
            "score_deviation": float(deviation[i]),
            "agreement": {name: {m: _number(values[m][i]) for m in measures} for name, values in per_method.items()},
        } for i in order],
    }
    result["verdict"] = verdict(result, thresholds)
    return result, maps


def _closeness(per_method: dict, maps: dict, n: int) -> np.ndarray:
    """Per input, the mean Spearman correlation of the two maps over methods; a map that is
    constant where the other is not (an all-zero gradient behind a saturated quantizer) counts
    as 0, two equal maps as 1."""
    if not per_method:
        return np.zeros(n)
    rows = []
    for label, values in per_method.items():
        ref, dep = maps[label]
        same = np.array([np.array_equal(a, b) for a, b in zip(ref, dep)])
        rho = values["spearman"] if "spearman" in values else compare(ref, dep, ("spearman",))["spearman"]
        rows.append(np.where(np.isfinite(rho), rho, np.where(same, 1.0, 0.0)))
    return np.mean(rows, axis=0)


def verdict(result: dict, thresholds: Mapping[str, float]) -> dict:
    """Each threshold checked against the comparison: pass/fail with the value seen."""
    checks = []
    for key, limit in thresholds.items():
        if key == "min_top1_agreement":
            values = {"": result["top1_agreement"]}
        elif key == "max_score_deviation":
            values = {"": result["score_deviation"]["max"]}
        else:
            measure = key.removeprefix("min_")
            values = {name: entry.get(measure, {}).get("mean") for name, entry in result["methods"].items()}
        for method, value in values.items():
            ok = value is not None and (value <= limit if key.startswith("max_") else value >= limit)
            checks.append({"threshold": key, "method": method or None, "limit": limit, "value": value, "passed": ok})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _summary(values: np.ndarray, higher_is_closer: bool) -> dict:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": None, "worst": None}
    return {"mean": float(finite.mean()), "worst": float(finite.min() if higher_is_closer else finite.max())}


def _number(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"

