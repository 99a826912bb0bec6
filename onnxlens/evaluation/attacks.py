"""Adversarial probes of a model and its explanations: FGSM and DeepFool through the backward
graph, and the one-pixel attack by differential evolution (forward passes only). ``probe``
attacks a batch and says how each explanation changed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import differential_evolution
from scipy.special import log_softmax

from onnxlens.errors import quote
from onnxlens.evaluation.agreement import compare
from onnxlens.evaluation.evaluate import as_engine
from onnxlens.evaluation.registry import MetricError
from onnxlens.methods.registry import run_method
from onnxlens.methods.scoring import class_score

ATTACKS = ("fgsm", "deepfool", "one_pixel")


def _logits(engine, x: np.ndarray) -> np.ndarray:
    return engine.forward(x)[engine.score_name()].reshape(len(x), -1).astype(np.float64)


def _value_range(x: np.ndarray) -> float:
    return float(x.max() - x.min()) or 1.0


def fgsm(engine, x: np.ndarray, target: np.ndarray, epsilon: float = 0.03) -> np.ndarray:
    """FGSM (Goodfellow et al., 2015, arXiv:1412.6572): x − ε·range·sign(∇ₓ log p_target), ε a
    fraction of the batch's value range, the gradient from the backward graph."""
    p = np.exp(log_softmax(_logits(engine, x), axis=1))
    seed = engine.one_hot(target) - p.astype(np.float32)  # ∇ log p_t = ∇ logit_t − Σ p_j ∇ logit_j
    grad = engine.vjp(x, seed).grads[engine.input_name]
    return (x - epsilon * _value_range(x) * np.sign(grad)).astype(np.float32)


def deepfool(engine, x: np.ndarray, max_iter: int = 50, overshoot: float = 0.02) -> np.ndarray:
    """DeepFool (Moosavi-Dezfooli et al., 2016, CVPR, arXiv:1511.04599), multi-class: each step
    moves every still-unflipped row to the nearest linearized decision boundary; the total
    perturbation is scaled by 1 + ``overshoot``. Rows stop when their class changes."""
    original = _logits(engine, x).argmax(axis=1)
    classes = engine.one_hot(original).shape[1]
    delta = np.zeros_like(x, dtype=np.float64)
    active = np.ones(len(x), bool)
    for _ in range(max_iter):
        current = (x + (1 + overshoot) * delta).astype(np.float32)
        logits = _logits(engine, current)
        active &= logits.argmax(axis=1) == original
        if not active.any():
            break
        rows = np.flatnonzero(active)
        grads = np.stack([engine.vjp(current[rows], engine.one_hot(np.full(len(rows), k))).grads[engine.input_name]
                          for k in range(classes)], axis=1).astype(np.float64)  # rows × K × input
        for j, i in enumerate(rows):
            w = grads[j] - grads[j, original[i]]
            f = logits[i] - logits[i, original[i]]
            norms = np.sqrt((w.reshape(classes, -1) ** 2).sum(axis=1))
            ratio = np.where(np.arange(classes) == original[i], np.inf, np.abs(f) / np.maximum(norms, 1e-12))
            k = int(np.argmin(ratio))
            delta[i] += (abs(f[k]) + 1e-4) / max(norms[k], 1e-12) ** 2 * w[k]
    return (x + (1 + overshoot) * delta).astype(np.float32)


def one_pixel(engine, x: np.ndarray, target: np.ndarray, pixels: int = 1, maxiter: int = 30, popsize: int = 40,
              seed: int = 0) -> np.ndarray:
    """The one-pixel attack (Su et al., 2019, IEEE TEVC, arXiv:1710.08864): differential evolution
    (scipy) over (row, column, value per channel) of ``pixels`` pixels, minimizing the target's
    probability; values within the batch's range. Each generation is one batched forward pass."""
    axis = engine.channel_axis
    h, w = engine.spatial_size(x)
    channels = x.shape[axis]
    bounds = [(0, h - 1e-6), (0, w - 1e-6)] + [(float(x.min()), float(x.max()))] * channels

    def paint(row: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """Copies of ``row`` with the pixels of each gene vector (population × genes) set."""
        out = np.repeat(row[None], len(genes), axis=0)
        for g, vector in enumerate(genes):
            for r, c, *values in vector.reshape(pixels, 2 + channels):
                if axis == 1:
                    out[g, :, int(r), int(c)] = values
                else:
                    out[g, int(r), int(c), :] = values
        return out

    attacked = x.copy()
    for i in range(len(x)):
        def objective(population, i=i):  # scipy passes parameters × population when vectorized
            genes = population.T
            return class_score(engine, paint(x[i], genes), np.full(len(genes), target[i]), "probability")

        result = differential_evolution(objective, bounds * pixels, maxiter=maxiter, popsize=popsize, seed=seed,
                                        vectorized=True, updating="deferred", polish=False, tol=0, recombination=1.0)
        attacked[i] = paint(x[i], result.x[None])[0]
    return attacked


@dataclass
class ProbeResult:
    """An attack on a batch and what it did to one explanation method."""

    attack: str
    adversarial: np.ndarray  #: the attacked inputs
    before: np.ndarray  #: predicted class per row before the attack
    after: np.ndarray  #: and after
    dice: np.ndarray  #: per row: Dice of the maps' top ``fraction`` pixels before/after
    ssim: np.ndarray  #: per row: SSIM of the maps before/after
    perturbation: np.ndarray  #: per row: L∞ size of the change, as a fraction of the value range
    params: dict = field(default_factory=dict)

    @property
    def flipped(self) -> np.ndarray:
        return self.after != self.before


def attack(engine, x: np.ndarray, target: np.ndarray, name: str = "fgsm", **params) -> np.ndarray:
    """The adversarial copies of ``x`` by attack ``name`` (fgsm, deepfool, one_pixel)."""
    if name == "fgsm":
        return fgsm(engine, x, target, **params)
    if name == "deepfool":
        return deepfool(engine, x, **params)
    if name == "one_pixel":
        return one_pixel(engine, x, target, **params)
    raise MetricError(f"unknown attack {quote(name)}; choose one of {', '.join(ATTACKS)}")


def probe(model, x: np.ndarray, method: str = "gradient", attack_name: str = "fgsm", *, target=None,
          fraction: float = 0.1, method_params: dict | None = None, **attack_params) -> ProbeResult:
    """Attack ``x`` and explain it before and after with ``method`` (the same target: the class
    predicted before the attack, unless given): the new prediction and how the map moved."""
    engine = as_engine(model)
    x = engine.check_input(x)
    method_params = method_params or {}
    before_e = run_method(method, engine, x, target, **method_params)
    adversarial = attack(engine, x, before_e.target, attack_name, **attack_params)
    after_e = run_method(method, engine, adversarial, before_e.target, **method_params)
    scores = compare(before_e.heatmap, after_e.heatmap, ("dice", "ssim"), fraction=fraction)
    size = np.abs(adversarial - x).reshape(len(x), -1).max(axis=1) / _value_range(x)
    return ProbeResult(attack_name, adversarial, _logits(engine, x).argmax(axis=1),
                       _logits(engine, adversarial).argmax(axis=1), scores["dice"], scores["ssim"], size,
                       {"method": method, **method_params, **attack_params})
