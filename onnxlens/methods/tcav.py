"""TCAV — Testing with Concept Activation Vectors (Kim et al., 2018, ICML, arXiv:1711.11279).

A concept (a set of example images) becomes a direction in a layer's activation space: the
normal of a logistic-regression boundary between the concept's activations and those of random
images (the CAV). The TCAV score of class k is the share of class-k inputs whose class logit
grows along the CAV (directional derivative ∇h_k(f_l(x))·v_C > 0, from the backward graph at the
layer). One CAV per random set; the same is done with CAVs between two random sets, and a
two-sided t-test (scipy.stats) says whether the concept's scores differ from those of random
directions — without it, a TCAV score means nothing (the paper's statistical testing)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats
from scipy.special import expit

from onnxlens.methods.registry import MethodError, resolve_targets


def linear_cav(positive: np.ndarray, negative: np.ndarray, l2: float = 0.01) -> tuple[np.ndarray, float]:
    """(unit CAV, training accuracy): L2-regularized logistic regression separating ``positive``
    rows (the concept) from ``negative`` rows, on features standardized by the pooled mean and
    scale; the CAV is the weight vector mapped back to activation space, pointing to the
    concept. Solved (L-BFGS) in its dual variables: with few examples of many features the
    weights lie in the examples' span (w = Zᵀa), so the problem has one unknown per example."""
    data = np.concatenate([positive, negative]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    mean, scale = data.mean(axis=0), data.std(axis=0)
    scale[scale == 0] = 1.0
    z = (data - mean) / scale
    gram = z @ z.T

    def loss(params):
        a, b = params[:-1], params[-1]
        logits = gram @ a + b
        p = expit(logits)
        value = np.logaddexp(0, logits).sum() - labels @ logits + 0.5 * l2 * a @ gram @ a
        grad = gram @ (p - labels + l2 * a)
        return value, np.append(grad, (p - labels).sum())

    result = optimize.minimize(loss, np.zeros(len(z) + 1), jac=True, method="L-BFGS-B")
    a, b = result.x[:-1], result.x[-1]
    accuracy = float((((gram @ a + b) > 0) == labels.astype(bool)).mean())
    direction = (z.T @ a) / scale  # d(logit)/d(activation): the normal in activation space
    norm = np.linalg.norm(direction)
    if norm == 0:
        raise MethodError("the concept and random activations are indistinguishable at this layer (zero CAV)")
    return direction / norm, accuracy


@dataclass
class TcavResult:
    """TCAV scores of one concept for one class at one layer, with the significance test."""

    layer: str
    target: int
    scores: np.ndarray  #: TCAV score of each concept-vs-random CAV
    random_scores: np.ndarray  #: TCAV score of each random-vs-random CAV
    accuracies: np.ndarray  #: training accuracy of each concept CAV
    p_value: float  #: two-sided t-test, concept scores vs random scores
    alpha: float = 0.05
    params: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.scores.mean())

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "class": self.target, "tcav_score": self.score,
                "tcav_score_std": float(self.scores.std()), "random_score": float(self.random_scores.mean()),
                "random_score_std": float(self.random_scores.std()), "p_value": self.p_value,
                "significant": self.significant, "alpha": self.alpha, "scores": self.scores.tolist(),
                "random_scores": self.random_scores.tolist(), "cav_accuracy": self.accuracies.tolist(),
                **self.params}


def random_sets(random: list[np.ndarray], runs: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """The random image sets: the given sets when there are at least ``runs`` of them (as the
    paper uses), otherwise ``runs`` disjoint sets of ``size`` drawn (seeded) from all of them."""
    if len(random) >= runs:
        return random
    pool = np.concatenate(random)
    size = min(size, len(pool) // runs)
    if size < 2:
        raise MethodError(f"{len(pool)} random images cannot make {runs} random sets of 2 or more; "
                          f"give at least {2 * runs} (or {runs} --random folders)")
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[order[k * size:(k + 1) * size]] for k in range(runs)]


def tcav(engine, inputs: np.ndarray, concept: np.ndarray, random: list[np.ndarray], layer: str,
         target=None, *, runs: int = 10, alpha: float = 0.05, l2: float = 0.01, seed: int = 0) -> TcavResult:
    """TCAV of ``concept`` images for class ``target`` (default: the class most often predicted
    on ``inputs``) at tensor ``layer``, with ``inputs`` the class's images; ``random`` is a list
    of random image arrays (see :func:`random_sets`); ``runs`` ≥ 2 concept CAVs and as many
    random CAVs (set i against set i + 1)."""
    if runs < 2:
        raise MethodError(f"TCAV needs at least 2 runs for its t-test, got {runs}")
    engine.require_tensor(layer)
    inputs, concept = engine.check_input(inputs), engine.check_input(concept)
    sets = [engine.check_input(r) for r in random_sets(list(random), runs, len(concept), seed)]

    def activations(x):
        return engine.forward(x, [layer])[layer].reshape(len(x), -1).astype(np.float64)

    if target is None:
        target = int(np.bincount(_classes(engine, inputs, None)).argmax())
    target = int(_classes(engine, inputs[:1], target)[0])
    grads = engine.vjp(inputs, engine.one_hot(np.full(len(inputs), target)), wrt=[layer]).grads[layer]
    grads = grads.reshape(len(inputs), -1).astype(np.float64)
    concept_acts = activations(concept)
    random_acts = [activations(s) for s in sets]

    def score(positive, negative):
        cav, accuracy = linear_cav(positive, negative, l2)
        return float((grads @ cav > 0).mean()), accuracy

    concept_runs = [score(concept_acts, r) for r in random_acts]
    random_runs = [score(random_acts[k], random_acts[(k + 1) % len(random_acts)])[0] for k in range(len(random_acts))]
    scores = np.asarray([s for s, _ in concept_runs])
    random_scores = np.asarray(random_runs)
    if np.ptp(scores) == 0 and np.ptp(random_scores) == 0:
        p_value = 1.0 if scores[0] == random_scores[0] else 0.0
    else:
        p_value = float(stats.ttest_ind(scores, random_scores, equal_var=False).pvalue)
    return TcavResult(layer, target, scores, random_scores, np.asarray([a for _, a in concept_runs]), p_value, alpha,
                      {"runs": len(sets), "inputs": len(inputs), "concept_images": len(concept), "l2": l2, "seed": seed})


def _classes(engine, x: np.ndarray, target) -> np.ndarray:
    classes, weights = resolve_targets(engine, x, target)
    if weights is not None:
        raise MethodError("TCAV explains a class of a class-score vector; this output is a dense map or a sequence")
    return classes
