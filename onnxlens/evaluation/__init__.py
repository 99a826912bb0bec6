"""Metrics over (engine, inputs, explanations): faithfulness, localization, robustness,
complexity, sanity checks, agreement with other maps and with model-free baselines, and the
checks methods promise."""

from onnxlens.evaluation import (  # noqa: F401  (registration)
    checks,
    complexity,
    faithfulness,
    frequency,
    localization,
    robustness,
    sanity,
)
from onnxlens.evaluation.evaluate import DEFAULT_METRICS, evaluate
from onnxlens.evaluation.registry import METRICS, MetricError, metric_info

__all__ = ["DEFAULT_METRICS", "METRICS", "MetricError", "evaluate", "metric_info"]
