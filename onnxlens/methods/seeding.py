"""The backward run of a single-pass method, seeded by its target: the given classes or
weights, or — the default target of a class-score vector — each row's top class, chosen inside
the same session run (ArgMax → OneHot in the graph) instead of by a forward pass first."""

from __future__ import annotations

import numpy as np

from onnxlens.errors import quote
from onnxlens.methods.registry import MethodError
from onnxlens.runtime.engine import PREDICTED


def seeded_vjp(engine, x: np.ndarray, target: np.ndarray | None, score: str = "logit", **kwargs):
    """(``engine.vjp`` of ``x`` seeded by ``target``, the target per row): None seeds the
    predicted class in the graph and returns the class it chose."""
    if target is None:
        result = engine.vjp(x, PREDICTED, score=score, **kwargs)
        if len(result.scores) != len(x):
            raise MethodError(f"the score tensor {quote(engine.score_name(score))} has shape "
                              f"{list(result.scores.shape)} for {len(x)} input row(s); a target is read from "
                              "one row of scores per input row")
        return result, result.predicted
    return engine.vjp(x, engine.one_hot(target, score), score=score, **kwargs), target
