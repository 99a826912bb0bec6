"""Where a run's pass and fail are decided, once, when it finishes; reports only show them.

- ``verdict``: each threshold of the audit configuration against a metric's mean (a ``fail``
  threshold decides the exit code, a ``warn`` is flagged); ``with_deployment_checks`` adds the
  deployed-vs-reference comparison's thresholds.
- ``findings``: per method, what the metrics say: is it shown to be faithful, does it pass the
  sanity checks, does it flag reliance on a spurious region. Each finding states the numbers
  and the rule that decided it. Rules (stated on the report page too):

- faithful: on every faithfulness metric the run measured, the method does better than every
  model-free baseline map (a map that never looked at the model); worse than one of them on
  any metric: "not shown faithful".
- sanity: after randomizing the model's weights (cascading: all layers), the map must change —
  a Spearman correlation of |map| with the original of at least ``SANITY_LIMIT`` fails
  (Adebayo et al., 2018); the random-logit test fails at a mean SSIM of at least
  ``RANDOM_LOGIT_LIMIT`` between the maps of two classes (Sixt et al., 2020).
- localization: relevance mass inside the masks (pointing game when absent) against the best
  model-free baseline. Masks marking the object: no better than a baseline is flagged. Masks
  marking a spurious region (``masks_mark = "spurious"``): more than every baseline is flagged —
  the model, not image saliency, puts relevance there.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxlens.bundle import BASELINE_PREFIX as BASELINE
from onnxlens.evaluation.deployment import THRESHOLDS

SANITY_LIMIT = 0.5
RANDOM_LOGIT_LIMIT = 0.9
#: Exit code of ``onnxlens audit`` when a ``fail`` threshold is not met.
EXIT_VERDICT_FAILED = 5


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _best_baseline(results: dict, higher: bool) -> tuple[str, float] | None:
    values = [(label[len(BASELINE):], r["mean"]) for label, r in results.items()
              if label.startswith(BASELINE) and r.get("mean") is not None]
    if not values:
        return None
    return (max if higher else min)(values, key=lambda v: v[1])


def _faithfulness(metrics: dict, label: str) -> dict:
    compared, losses, unmatched = [], [], []
    for name, entry in metrics.items():
        result = entry["results"].get(label)
        if entry["family"] != "faithfulness" or result is None or result.get("mean") is None:
            continue
        higher = bool(result.get("higher_is_better"))
        best = _best_baseline(entry["results"], higher)
        if best is None:
            unmatched.append(name)
            continue
        compared.append(name)
        if not _better(result["mean"], best[1], higher):
            losses.append(f"{name} {result['mean']:.3g} vs {best[0]} {best[1]:.3g}")
    if losses:
        return {"status": "fail", "text": "not shown faithful: a model-free map does as well on " + "; ".join(losses)}
    if compared:
        return {"status": "pass", "text": "faithful: beats every model-free baseline on " + ", ".join(compared)}
    if unmatched:
        return {"status": "none", "text": "measured (" + ", ".join(unmatched) + ") without baselines to compare with"}
    return {"status": "none", "text": "no faithfulness metric in this run"}


def _sanity(metrics: dict, label: str) -> dict:
    texts, failed = [], False
    randomization = metrics.get("model_randomization", {}).get("results", {}).get(label)
    if randomization and randomization.get("spearman_abs_by_layer"):
        by_layer = randomization["spearman_abs_by_layer"]
        cascading = randomization.get("mode", "cascading") == "cascading"
        value = by_layer[-1] if cascading else max(v for v in by_layer if v is not None)
        where = f"all {len(by_layer)} layers randomized" if cascading else "most similar single-layer randomization"
        bad = value is not None and value >= SANITY_LIMIT
        failed |= bad
        texts.append(f"{'fails' if bad else 'passes'} model randomization (Spearman |map| {value:.2f} with {where})")
    logit = metrics.get("random_logit", {}).get("results", {}).get(label)
    if logit and logit.get("mean") is not None:
        bad = logit["mean"] >= RANDOM_LOGIT_LIMIT
        failed |= bad
        texts.append(f"{'fails' if bad else 'passes'} the random-logit test (SSIM {logit['mean']:.2f})")
    if not texts:
        return {"status": "none", "text": "no sanity check in this run"}
    return {"status": "fail" if failed else "pass", "text": "; ".join(texts)}


def _localization(metrics: dict, label: str, masks_mark: str) -> dict:
    for name in ("relevance_mass", "pointing_game"):
        result = metrics.get(name, {}).get("results", {}).get(label)
        if result is None or result.get("mean") is None:
            continue
        value = result["mean"]
        best = _best_baseline(metrics[name]["results"], True)
        if best is None:
            return {"status": "none", "text": f"{name} {value:.3g} (no model-free baseline to compare with)"}
        if masks_mark == "spurious":
            flagged = value > best[1]
            text = (f"{name} on the spurious region {value:.3g}, above every model-free map (best {best[0]} "
                    f"{best[1]:.3g}): relies on it" if flagged else
                    f"{name} on the spurious region {value:.3g}, within model-free maps' (best {best[0]} {best[1]:.3g})")
        else:
            flagged = value <= best[1]
            text = (f"{name} on the object {value:.3g}, no better than a model-free map ({best[0]} {best[1]:.3g})"
                    if flagged else f"{name} on the object {value:.3g}, above every model-free map "
                                    f"(best {best[0]} {best[1]:.3g})")
        return {"status": "flag" if flagged else "pass", "text": text}
    return {"status": "none", "text": "no localization metric in this run"}


def findings(metrics: dict, labels: Sequence[str], masks_mark: str = "object",
             warnings: dict[str, list[str]] | None = None) -> dict:
    """What ``metrics`` (merged metric results) say about each explained method in ``labels``,
    and whether its explanations came with warnings (``warnings``: label → lines, e.g.
    relevance that is not conserved, a saturated quantizer), with the limits that decided it:
    the bundle's ``findings``."""
    return {"sanity_limit": SANITY_LIMIT, "random_logit_limit": RANDOM_LOGIT_LIMIT, "masks_mark": masks_mark,
            "methods": [{"method": label, "faithfulness": _faithfulness(metrics, label),
                         "sanity": _sanity(metrics, label), "localization": _localization(metrics, label, masks_mark),
                         "reliability": _reliability((warnings or {}).get(label, []))}
                        for label in labels]}


def _reliability(warnings: list[str]) -> dict:
    if not warnings:
        return {"status": "pass", "text": "no warning from the method"}
    more = f" (and {len(warnings) - 2} more)" if len(warnings) > 2 else ""
    return {"status": "flag", "text": "unreliable: " + "; ".join(warnings[:2]) + more}


def _decided(checks: list[dict], **rest) -> dict:
    passed = all(c["passed"] for c in checks if c["severity"] == "fail")
    return {**rest, "passed": passed, "exit_code": 0 if passed else EXIT_VERDICT_FAILED, "checks": checks,
            "warnings": [c for c in checks if c["severity"] == "warn" and not c["passed"]]}


def verdict(thresholds: Sequence, labels: Sequence[str], metrics: dict, failed_items: int) -> dict:
    """Each threshold (``metric``, ``method`` or None for every label, ``max``, ``min``,
    ``severity``, ``description``) checked against the metric's mean for each method it names."""
    checks = []
    for rule in thresholds:
        entry = metrics.get(rule.metric)
        for label in [rule.method] if rule.method else labels:
            value = None if entry is None else entry["results"].get(label, {}).get("mean")
            ok = value is not None and (rule.max is None or value <= rule.max) and (rule.min is None or value >= rule.min)
            checks.append({"metric": rule.metric, "method": label, "value": value, "max": rule.max, "min": rule.min,
                           "severity": rule.severity, "passed": ok, "description": rule.description,
                           "why": None if value is not None else "the metric was not computed for this method"})
    return _decided(checks, failed_items=failed_items)


def with_deployment_checks(verdict_: dict, deployment: dict, severity: str) -> dict:
    """The verdict with each threshold of the deployed-vs-reference comparison as a check
    (metric ``deployment:THRESHOLD``) of the given severity."""
    checks = [{"metric": f"deployment:{c['threshold']}", "method": c["method"] or "all",
               "value": c["value"], "max": c["limit"] if c["threshold"].startswith("max_") else None,
               "min": None if c["threshold"].startswith("max_") else c["limit"], "severity": severity,
               "passed": c["passed"], "description": THRESHOLDS[c["threshold"]],
               "why": None if c["value"] is not None else "the comparison has no value for it"}
              for c in deployment["verdict"]["checks"]]
    return _decided(verdict_["checks"] + checks, failed_items=verdict_["failed_items"])
