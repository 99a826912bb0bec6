"""Robustness: does the map stay put when the input barely moves? Every metric re-explains
perturbed copies of the batch with the same method, parameters and target (all copies in one
call, so they share compiled graphs and large batches)."""

from __future__ import annotations

import numpy as np

from onnxlens.evaluation.agreement import compare
from onnxlens.evaluation.registry import explain_again, metric


def _norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt((a.reshape(len(a), -1).astype(np.float64) ** 2).sum(axis=1))


def _re_explained(ctx, e, noise: np.ndarray) -> np.ndarray:
    """Attributions for x + noise (samples × images × input), explaining the same targets."""
    samples = len(noise)
    moved = (ctx.x[None] + noise).reshape(-1, *ctx.x.shape[1:]).astype(np.float32)
    again = explain_again(ctx, e, moved, copies=samples)
    return again.attribution.reshape(samples, *ctx.x.shape)


def _sensitivity(ctx, e, radius, samples):
    rng = np.random.default_rng(ctx.seed)
    noise = rng.uniform(-radius, radius, (samples, *ctx.x.shape)).astype(np.float32)
    moved = _re_explained(ctx, e, noise)
    change = np.stack([_norms(m - e.attribution) for m in moved])
    return change / np.maximum(_norms(e.attribution), 1e-12)


@metric("max_sensitivity", "robustness", higher_is_better=False)
def max_sensitivity(ctx, e, *, radius: float = 0.2, samples: int = 10) -> dict:
    """Max-sensitivity (Yeh et al., 2019, NeurIPS, arXiv:1901.09392): the largest relative
    change ‖a(x + δ) − a(x)‖ / ‖a(x)‖ (Frobenius) over ``samples`` uniform L∞ perturbations
    of radius ``radius`` (seeded), as Quantus's MaxSensitivity."""
    return {"per_image": _sensitivity(ctx, e, radius, samples).max(axis=0)}


@metric("avg_sensitivity", "robustness", higher_is_better=False)
def avg_sensitivity(ctx, e, *, radius: float = 0.2, samples: int = 10) -> dict:
    """Average sensitivity (Yeh et al., 2019): the mean of the same relative changes."""
    return {"per_image": _sensitivity(ctx, e, radius, samples).mean(axis=0)}


@metric("local_lipschitz", "robustness", higher_is_better=False)
def local_lipschitz(ctx, e, *, sigma: float = 0.1, samples: int = 10) -> dict:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018, arXiv:1806.08049): the largest
    ‖a(x) − a(x′)‖₂ / ‖x − x′‖₂ over ``samples`` Gaussian neighbours x′ = x + N(0, σ²) (seeded)."""
    noise = np.random.default_rng(ctx.seed).normal(0.0, sigma, (samples, *ctx.x.shape)).astype(np.float32)
    moved = _re_explained(ctx, e, noise)
    ratios = np.stack([_norms(m - e.attribution) / np.maximum(_norms(n), 1e-12) for m, n in zip(moved, noise)])
    return {"per_image": ratios.max(axis=0)}


@metric("adversarial_stability", "robustness", higher_is_better=True, class_vector=True)
def adversarial_stability(ctx, e, *, attack: str = "fgsm", epsilon: float = 0.03, fraction: float = 0.1) -> dict:
    """Stability under an adversarial attack (as the survey uses attacks to probe explanations;
    Galli et al.): the Dice overlap of the maps' top ``fraction`` pixels before and after the
    attack (``attack``: fgsm with ``epsilon`` a fraction of the batch's value range — Goodfellow
    et al., 2015 —, deepfool, or one_pixel; see ``onnxlens.evaluation.attacks``), re-explained
    for the same class. ``flipped`` marks images whose predicted class the attack changed."""
    from onnxlens.evaluation.attacks import attack as run_attack

    engine, x = ctx.engine, ctx.x
    attacked = run_attack(engine, x, e.target, attack, **({"epsilon": epsilon} if attack == "fgsm" else {}))
    again = explain_again(ctx, e, attacked)
    predicted = [engine.forward(v)[engine.score_name()].reshape(len(x), -1).argmax(axis=1) for v in (x, attacked)]
    dice = compare(e.heatmap, again.heatmap, ("dice",), fraction=fraction)["dice"]
    return {"per_image": dice, "flipped": predicted[1] != predicted[0]}
