"""Sanity checks (Adebayo et al., 2018, NeurIPS, arXiv:1810.03292; Sixt et al., 2020, ICML):
a map that barely changes when the model's weights are randomized, or when another class is
explained, does not explain the model's decision."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxlens.evaluation.agreement import compare
from onnxlens.evaluation.registry import MetricError, explain_again, metric
from onnxlens.graph_ops.randomize import parameter_layers, randomize

MODES = ("cascading", "independent")


def _similarities(original: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman rank correlation with and without absolute values, and SSIM (no HOG)."""
    values = compare(original, other, ("spearman", "ssim"))
    values["spearman_abs"] = compare(np.abs(original), np.abs(other), ("spearman",))["spearman"]
    return values


@metric("model_randomization", "sanity", higher_is_better=False)
def model_randomization(ctx, e, *, mode: str = "cascading", max_layers: int = 0) -> dict:
    """Model-parameter randomization (Adebayo et al., 2018): layers redrawn from the output
    towards the input — ``cascading`` (each step randomizes one more layer) or ``independent``
    (one layer at a time) — seeded; BatchNorm running statistics stay, so no NaN. Per layer,
    the similarity of the map from the randomized model to the original: Spearman (signed and
    |·|) and SSIM. ``per_image``: the mean Spearman |·| similarity over the steps (lower: the
    map depends on the weights, as it should). ``max_layers`` > 0 stops after that many."""
    if mode not in MODES:
        raise MetricError(f"mode must be cascading or independent, got {mode!r}")
    engine = ctx.engine
    layers = parameter_layers(engine.model.model)
    if max_layers > 0:
        layers = layers[:max_layers]
    if not layers:
        raise MetricError("the model has no layer with learnable constants to randomize")
    from onnxlens.runtime.engine import Engine

    steps: dict[str, list] = {"spearman": [], "spearman_abs": [], "ssim": []}
    for k, layer in enumerate(layers):
        chosen = [p for lay in layers[: k + 1] for p in lay.parameters] if mode == "cascading" else layer.parameters
        model = randomize(engine.model.model, chosen, seed=ctx.seed + (0 if mode == "cascading" else k))
        randomized = Engine(replace(engine.model, model=model, deployed=None), engine.config,
                            batch_size=engine.batch_size).with_output(engine.output)
        values = _similarities(e.heatmap, explain_again(ctx, e, engine=randomized).heatmap)
        for name, v in values.items():
            steps[name].append(v)
    arrays = {name: np.stack(v) for name, v in steps.items()}  # steps × images
    return {"per_image": np.nanmean(arrays["spearman_abs"], axis=0), "layers": [lay.name for lay in layers],
            "mode": mode, **{f"{name}_by_layer": np.nanmean(v, axis=1) for name, v in arrays.items()},
            **{f"{name}_per_image": v for name, v in arrays.items()}}


@metric("random_logit", "sanity", higher_is_better=False, class_vector=True)
def random_logit(ctx, e) -> dict:
    """Random logit test (Sixt et al., 2020, ICML, arXiv:1912.09818; Quantus's RandomLogit):
    the SSIM between the map of the explained class and the map of another class drawn at
    random (seeded); a map that stays the same explains no class."""
    classes = ctx.engine.one_hot(np.zeros(1, np.int64)).shape[1]
    if classes < 2:
        raise MetricError("the random-logit test needs a model with two or more classes")
    rng = np.random.default_rng(ctx.seed)
    other = (e.target + rng.integers(1, classes, len(e.target))) % classes
    values = _similarities(e.heatmap, explain_again(ctx, e, target=other).heatmap)
    return {"per_image": values["ssim"], "spearman": values["spearman"], "other_class": other}
