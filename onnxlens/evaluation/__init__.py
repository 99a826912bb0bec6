"""Metrics over (engine, inputs, explanations): faithfulness, localization, complexity,
agreement with other maps and with model-free baselines, and the checks methods promise."""

from onnxlens.evaluation import checks, complexity, faithfulness, localization  # noqa: F401  (registration)
from onnxlens.evaluation.evaluate import DEFAULT_METRICS, evaluate
from onnxlens.evaluation.registry import METRICS, MetricError, metric_info

__all__ = ["DEFAULT_METRICS", "METRICS", "MetricError", "evaluate", "metric_info"]
