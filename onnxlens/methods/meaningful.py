"""Meaningful perturbation (Fong & Vedaldi, 2017, ICCV, arXiv:1704.03296): learn the smallest
region whose deletion — blurring it, or filling it with a constant — destroys the class
probability. The mask is optimized with Adam in numpy; the probability's gradient comes from the
backward graph at the perturbed input and is chained through the blend and the mask's bilinear
upsampling by hand (both are linear)."""

from __future__ import annotations

import numpy as np

from onnxlens.errors import quote
from onnxlens.methods.explanation import Explanation, spread_over_channels
from onnxlens.methods.registry import MethodError, method
from onnxlens.methods.scoring import class_score, substrate
from onnxlens.methods.targets import is_weights

FILLS = ("blur", "zero", "mean")


def _interpolation(small: int, large: int) -> np.ndarray:
    """large×small bilinear interpolation matrix (align_corners, the upsampling's Jacobian)."""
    if small == 1:
        return np.ones((large, 1))
    pos = np.linspace(0, small - 1, large)
    lo = np.minimum(np.floor(pos).astype(int), small - 2)
    frac = pos - lo
    m = np.zeros((large, small))
    m[np.arange(large), lo] = 1 - frac
    m[np.arange(large), lo + 1] = frac
    return m


def _tv(mask: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-row mean of |Δ|^β over horizontal and vertical neighbours, its gradient)."""
    dy, dx = np.diff(mask, axis=1), np.diff(mask, axis=2)
    count = dy[0].size + dx[0].size
    value = ((np.abs(dy) ** beta).sum(axis=(1, 2)) + (np.abs(dx) ** beta).sum(axis=(1, 2))) / count
    gy, gx = beta * np.abs(dy) ** (beta - 1) * np.sign(dy) / count, beta * np.abs(dx) ** (beta - 1) * np.sign(dx) / count
    grad = np.zeros_like(mask)
    grad[:, 1:, :] += gy
    grad[:, :-1, :] -= gy
    grad[:, :, 1:] += gx
    grad[:, :, :-1] -= gx
    return value, grad


@method("meaningful_perturbation")
def meaningful_perturbation(engine, x, target, *, fill: str = "blur", blur_sigma: float = 10.0, mask_size: int = 28,
                            l1: float = 10.0, tv: float = 2.0, tv_beta: float = 3.0, margin: float = 1.0,
                            iterations: int = 300, lr: float = 0.1, jitter: int = 4, seed: int = 0) -> Explanation:
    """Meaningful perturbation, the deletion game (Fong & Vedaldi, 2017): a ``mask_size``² mask
    m ∈ [0, 1] (1 keeps a pixel), upsampled bilinearly, blends the input with its deleted
    version (``fill``: blurred with ``blur_sigma``, zero, or each image's mean); Adam (``lr``,
    ``iterations``) minimizes

        l1·mean(1 − m) + tv·TV_β(m) + max(z_target − max_{j≠target} z_j + margin, 0)

    over the logits z of the blend, the mask jittered by up to ``jitter`` pixels each step
    (seeded; the paper's stochastic masks against adversarial artifacts). The paper scores the
    class probability; a confident model saturates it (its gradient vanishes, the mask never
    moves), so the score here is the logit margin, which stops rewarding deletion once another
    class leads by ``margin``. Heatmap: 1 − m upsampled (what must go); diagnostics: the mask,
    the probability before and after deleting, the deleted area."""
    if fill not in FILLS:
        raise MethodError(f"fill must be one of {', '.join(FILLS)}, got {quote(fill)}")
    if mask_size < 2 or iterations < 1 or lr <= 0 or l1 < 0 or tv < 0 or jitter < 0:
        raise MethodError("meaningful_perturbation needs mask_size ≥ 2, iterations ≥ 1, lr > 0 and "
                          "non-negative l1, tv and jitter")
    if is_weights(target):
        raise MethodError("meaningful_perturbation plays the margin of one class over the others; it explains "
                          "a class of a class-score vector, not a region or sequence target")
    axis = engine.channel_axis
    h, w = engine.spatial_size(x)
    deleted = substrate(engine, x, fill, sigma=blur_sigma, kernel=None)
    ih, iw = _interpolation(mask_size, h + 2 * jitter), _interpolation(mask_size, w + 2 * jitter)
    rng = np.random.default_rng(seed)
    mask = np.ones((len(x), mask_size, mask_size))
    m1, m2 = np.zeros_like(mask), np.zeros_like(mask)
    difference = (x - deleted).astype(np.float64)
    rows = np.arange(len(x))
    for step in range(1, iterations + 1):
        dy, dx = rng.integers(0, 2 * jitter + 1, size=2)
        uh, uw = ih[dy:dy + h], iw[dx:dx + w]
        full = np.einsum("hi,nij,wj->nhw", uh, mask, uw)
        keep = np.expand_dims(full, axis)
        blend = (deleted + keep * difference).astype(np.float32)
        logits = engine.forward(blend)[engine.score_name()].reshape(len(x), -1)
        rival = np.where(np.arange(logits.shape[1]) == target[:, None], -np.inf, logits).argmax(axis=1)
        active = logits[rows, target] - logits[rows, rival] + margin > 0
        seeds = (engine.one_hot(target) - engine.one_hot(rival)) * active[:, None]
        grad = engine.vjp(blend, seeds).grads[engine.input_name].astype(np.float64)
        grad_full = (grad * difference).sum(axis=axis)  # ∂margin/∂(upsampled mask)
        tv_value, tv_grad = _tv(mask, tv_beta)
        g = np.einsum("hi,nhw,wj->nij", uh, grad_full, uw) - l1 / mask_size ** 2 + tv * tv_grad
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g ** 2
        mask = np.clip(mask - lr * (m1 / (1 - 0.9 ** step)) / (np.sqrt(m2 / (1 - 0.999 ** step)) + 1e-8), 0, 1)
    full = np.einsum("hi,nij,wj->nhw", ih[jitter:jitter + h], mask, iw[jitter:jitter + w])
    final = (deleted + np.expand_dims(full, axis) * difference).astype(np.float32)
    heatmap = 1 - full
    before = class_score(engine, x, target, "probability")
    return Explanation(spread_over_channels(heatmap, x, axis), heatmap, target, before, "meaningful_perturbation",
                       diagnostics={"mask": mask, "probability_after": class_score(engine, final, target, "probability"),
                                    "deleted_area": heatmap.mean(axis=(1, 2))})
