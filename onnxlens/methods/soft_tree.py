"""Distilling a model into a soft decision tree (Frosst & Hinton, 2017, arXiv:1711.09784): a
complete binary tree whose inner node n sends an input right with probability
p_n = σ(w_n·x + b_n) and whose leaf ℓ holds a class distribution softmax(φ_ℓ). It is trained
(L-BFGS, analytic gradients, numpy/scipy) on the model's predicted distributions, minimizing
the paper's loss — the path-probability-weighted cross-entropy of the leaves,
Σ_ℓ P_ℓ(x)·H(T(x), Q_ℓ) — plus its penalty for unbalanced splits, −λ·2^−depth(n)·Σ_n ½·(log α_n +
log(1 − α_n)) with α_n the share of the data node n sends right, and an L2 term. Each inner
node's filter w_n is an image the shape of the input: what the node looks for. Fidelity — how
often the tree's most likely class equals the model's — is measured on held-out inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit, log_softmax, softmax

from onnxlens.methods.registry import MethodError


@dataclass
class SoftTree:
    depth: int
    weights: np.ndarray  #: inner nodes × input features (heap order: children of n are 2n+1, 2n+2)
    biases: np.ndarray  #: inner nodes
    leaves: np.ndarray  #: leaves × classes (logits)
    mean: np.ndarray  #: feature standardization the filters see
    scale: np.ndarray

    def _features(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) - self.mean) / self.scale

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The tree's class distribution: leaves mixed by their path probabilities."""
        reach = _reach(expit(self._features(x) @ self.weights.T + self.biases), self.depth)
        return reach[:, -(2 ** self.depth):] @ softmax(self.leaves, axis=1)

    def filters(self, row_shape: tuple) -> np.ndarray:
        """Each inner node's weights in the input's shape (back in input units)."""
        return (self.weights / self.scale).reshape(len(self.weights), *row_shape)


def _reach(p: np.ndarray, depth: int) -> np.ndarray:
    """N × (all nodes) probability of reaching each node, heap order; leaves are the last 2^depth."""
    inner = 2 ** depth - 1
    reach = np.ones((len(p), 2 * inner + 1))
    for n in range(inner):
        reach[:, 2 * n + 1] = reach[:, n] * (1 - p[:, n])
        reach[:, 2 * n + 2] = reach[:, n] * p[:, n]
    return reach


def _objective(params, z, targets, depth, classes, penalty, l2):
    inner, leaves = 2 ** depth - 1, 2 ** depth
    d = z.shape[1]
    w = params[:inner * d].reshape(inner, d)
    b = params[inner * d:inner * (d + 1)]
    phi = params[inner * (d + 1):].reshape(leaves, classes)
    p = expit(z @ w.T + b)
    reach = _reach(p, depth)
    log_q = log_softmax(phi, axis=1)
    cost = -(targets @ log_q.T)  # N × leaves: cross-entropy of each leaf
    path = reach[:, inner:]
    n = len(z)
    loss = (path * cost).sum() / n
    # the balance penalty on α_n = Σ reach_n p_n / Σ reach_n
    depths = np.floor(np.log2(np.arange(inner) + 1))
    lam = penalty * 2.0 ** -depths
    mass = reach[:, :inner].sum(axis=0) + 1e-12
    alpha = np.clip((reach[:, :inner] * p).sum(axis=0) / mass, 1e-6, 1 - 1e-6)
    loss += -(lam * 0.5 * (np.log(alpha) + np.log(1 - alpha))).sum() + 0.5 * l2 * (w ** 2).sum()
    dalpha = -lam * 0.5 * (1 / alpha - 1 / (1 - alpha))
    # per-node "value" whose change with reach the gradients carry down: leaves their cost,
    # inner nodes the penalty's dependence on who reaches them
    value = np.zeros_like(reach)
    value[:, inner:] = cost / n
    value[:, :inner] = dalpha * (p - alpha) / mass
    below = reach * value  # then summed bottom-up over each subtree
    for v in range(inner - 1, -1, -1):
        below[:, v] += below[:, 2 * v + 1] + below[:, 2 * v + 2]
    ds = (1 - p) * below[:, 2 * np.arange(inner) + 2] - p * below[:, 2 * np.arange(inner) + 1]
    ds += dalpha * reach[:, :inner] * p * (1 - p) / mass
    grad_w = ds.T @ z + l2 * w
    grad_b = ds.sum(axis=0)
    grad_phi = (path[:, :, None] * (np.exp(log_q)[None] - targets[:, None, :])).sum(axis=0) / n
    return loss, np.concatenate([grad_w.ravel(), grad_b, grad_phi.ravel()])


def fit_soft_tree(x: np.ndarray, targets: np.ndarray, depth: int = 4, *, penalty: float = 0.1, l2: float = 1e-3,
                  max_iter: int = 500, seed: int = 0) -> SoftTree:
    """A soft tree of ``depth`` fitted to the class distributions ``targets`` (N×K) of inputs
    ``x`` (any shape per row: flattened and standardized)."""
    if depth < 1 or depth > 10:
        raise MethodError(f"depth must be in 1..10, got {depth}")
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean, scale = flat.mean(axis=0), flat.std(axis=0)
    scale[scale == 0] = 1.0
    z = (flat - mean) / scale
    inner, leaves, classes = 2 ** depth - 1, 2 ** depth, targets.shape[1]
    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.normal(0, 0.01, inner * z.shape[1]), np.zeros(inner), rng.normal(0, 0.01, leaves * classes)])
    result = optimize.minimize(_objective, start, args=(z, targets.astype(np.float64), depth, classes, penalty, l2),
                               jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    d = z.shape[1]
    return SoftTree(depth, result.x[:inner * d].reshape(inner, d), result.x[inner * d:inner * (d + 1)],
                    result.x[inner * (d + 1):].reshape(leaves, classes), mean, scale)


def distill(engine, x: np.ndarray, depth: int = 4, *, heldout: float = 0.25, temperature: float = 1.0,
            seed: int = 0, **fit) -> tuple[SoftTree, dict]:
    """Distill the model into a soft tree on ``x``: a seeded ``heldout`` share is kept out of
    training; the targets are the model's class distributions, softmax(logits / ``temperature``).
    Returns the tree and its fidelity (agreement of arg-max classes with the model) on the
    training and held-out inputs."""
    if not 0 < heldout < 1:
        raise MethodError(f"heldout is a share in (0, 1), got {heldout}")
    x = engine.check_input(x)
    logits = engine.forward(x)[engine.score_name()].reshape(len(x), -1).astype(np.float64)
    targets = softmax(logits / temperature, axis=1)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - heldout)))
    if cut < 2 or cut == len(x):
        raise MethodError(f"{len(x)} inputs are too few to hold out {heldout:.0%}")
    train, test = order[:cut], order[cut:]
    tree = fit_soft_tree(x[train], targets[train], depth, seed=seed, **fit)
    predicted = logits.argmax(axis=1)

    def fidelity(rows):
        return float((tree.predict_proba(x[rows]).argmax(axis=1) == predicted[rows]).mean())

    return tree, {"depth": depth, "train_inputs": len(train), "heldout_inputs": len(test),
                  "fidelity_train": fidelity(train), "fidelity_heldout": fidelity(test), "temperature": temperature}
