"""Gradient-based attribution: saliency, Input×Gradient, Integrated Gradients, SmoothGrad and
its variants, Guided Backprop, DeconvNet, DeepLIFT."""

from __future__ import annotations

import time

import numpy as np

from onnxlens.graph_ops.backward.deeplift import DEEPLIFT_RULES
from onnxlens.graph_ops.backward.rulesets import DECONVNET, GUIDED_BACKPROP
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import MethodError, method, method_info
from onnxlens.methods.targets import target_scores, tile_rows
from onnxlens.methods.scoring import blurred, copy_chunks
from onnxlens.methods.seeding import seeded_vjp


def _input_grad(engine, x, target, rules=None, score="logit"):
    """(target per row, its score, the gradient of its score w.r.t. the input); a None target
    is the predicted class, chosen in the same run."""
    result, target = seeded_vjp(engine, x, target, score, rules=rules)
    return target, target_scores(result.scores, target), result.grads[engine.input_name]


def max_abs_over_channels(engine, attribution):
    return np.abs(attribution).max(axis=engine.channel_axis)


def sum_over_channels(engine, attribution):
    return attribution.sum(axis=engine.channel_axis)


@method("gradient", predicts=True)
def gradient(engine, x, target, *, abs: bool = True, score: str = "logit") -> Explanation:
    """Vanilla gradient saliency (Simonyan et al., 2014, arXiv:1312.6034).

    attribution: the signed gradient of the target score w.r.t. the input; heatmap: the
    maximum over channels of its magnitude (``abs=true``) or its sum over channels (``abs=false``).
    """
    target, values, grad = _input_grad(engine, x, target, score=score)
    heatmap = max_abs_over_channels(engine, grad) if abs else sum_over_channels(engine, grad)
    return Explanation(grad, heatmap, target, values, "gradient")


@method("input_x_gradient", predicts=True)
def input_x_gradient(engine, x, target, *, score: str = "logit") -> Explanation:
    """Input × Gradient (Shrikumar et al., 2016, arXiv:1605.01713); heatmap: sum over channels."""
    target, values, grad = _input_grad(engine, x, target, score=score)
    attribution = x * grad
    return Explanation(attribution, sum_over_channels(engine, attribution), target, values, "input_x_gradient")


@method("guided_backprop", predicts=True)
def guided_backprop(engine, x, target, *, score: str = "logit") -> Explanation:
    """Guided Backpropagation (Springenberg et al., 2015, arXiv:1412.6806): only positive
    cotangents pass ReLUs, and only where the input was positive. Heatmap: max |·| over channels."""
    target, values, grad = _input_grad(engine, x, target, GUIDED_BACKPROP, score)
    return Explanation(grad, max_abs_over_channels(engine, grad), target, values, "guided_backprop")


@method("deconvnet", predicts=True)
def deconvnet(engine, x, target, *, score: str = "logit") -> Explanation:
    """DeconvNet (Zeiler & Fergus, 2014, arXiv:1311.2901): ReLUs pass the positive part of the
    cotangent regardless of the forward input. Heatmap: max |·| over channels."""
    target, values, grad = _input_grad(engine, x, target, DECONVNET, score)
    return Explanation(grad, max_abs_over_channels(engine, grad), target, values, "deconvnet")


QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas in [0, 1], weights) for Integrated Gradients, exactly as Captum defines them —
    including its trapezoid rule, whose step is 1/steps with halved ends (weights sum to
    (steps − 1)/steps, so its completeness gap does not vanish)."""
    if steps < 1 or (rule == "riemann_trapezoid" and steps < 2):
        raise MethodError(f"steps must be at least {2 if rule == 'riemann_trapezoid' else 1}, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if rule == "riemann_trapezoid":
        weights = np.full(steps, 1.0 / steps)
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, steps), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise MethodError(f"unknown quadrature {rule!r}; choose one of {', '.join(QUADRATURES)}")
    return (np.arange(steps) + offsets[rule]) / steps, np.full(steps, 1.0 / steps)


def make_baseline(engine, x, baseline, blur_sigma: float, seed: int) -> np.ndarray:
    """zeros (black), blur (Gaussian blur of the input over H and W), uniform (noise over the
    input's value range, seeded), or an array broadcastable to the input."""
    if isinstance(baseline, np.ndarray):
        return np.broadcast_to(baseline.astype(np.float32), x.shape).copy()
    if baseline == "zeros":
        return np.zeros_like(x)
    if baseline == "blur":
        return blurred(engine, x, blur_sigma, kernel=None)
    if baseline == "uniform":
        rng = np.random.default_rng(seed)
        return rng.uniform(x.min(), x.max(), x.shape).astype(np.float32)
    raise MethodError(f"unknown baseline {baseline!r}; choose zeros, blur, uniform or pass an array")


@method("integrated_gradients")
def integrated_gradients(engine, x, target, *, steps: int = 50, quadrature_rule: str = "gausslegendre",
                         baseline="zeros", blur_sigma: float = 5.0, seed: int = 0, tolerance: float = 0.0,
                         max_steps: int = 256, score: str = "logit") -> Explanation:
    """Integrated Gradients (Sundararajan et al., 2017, arXiv:1703.01365).

    attribution = (x − baseline) · Σ_k w_k ∇f(baseline + α_k (x − baseline)), all steps batched
    through one compiled graph. Defaults as Captum: zeros baseline, Gauss–Legendre, 50 steps.
    Heatmap: sum over channels. ``diagnostics['completeness_gap']`` = |Σ attribution − (f(x) − f(baseline))|.

    ``tolerance`` > 0 integrates to a stated accuracy instead of a step count: the rows whose
    relative gap |Σ attribution − Δf| / |Δf| is above it get a finer rule, up to ``max_steps``;
    ``steps`` is not used. With ``riemann_middle`` the rule is nested — 3, 9, 27… midpoints,
    each keeping the gradients already taken, so a row costs its final step count; with
    another rule the count doubles from 4, each rule new. On ReLU networks the integrand has
    kinks, where Gauss–Legendre loses its high order: the nested midpoints reach a gap with
    fewer gradients (``benchmarks/methods.py``). ``diagnostics['steps']`` holds each row's step
    count and ``relative_gap`` its final gap; rows left above the tolerance get a warning.
    """
    start = time.perf_counter()
    if tolerance < 0:
        raise MethodError(f"tolerance must be 0 (a fixed step count) or positive, got {tolerance:g}")
    base = make_baseline(engine, x, baseline, blur_sigma, seed)
    n = len(x)
    ends = engine.forward(np.concatenate([x, base]))[engine.score_name(score)]
    end_scores = target_scores(ends, tile_rows(target, 2))
    values, base_score = end_scores[:n], end_scores[n:]
    change = values.astype(np.float64) - base_score
    nested = bool(tolerance) and quadrature_rule == "riemann_middle"
    rows, count = np.arange(n), steps if not tolerance else 3 if nested else 4
    if tolerance and max_steps < count:
        raise MethodError(f"max_steps must be at least {count}, got {max_steps}")
    sums, used = np.zeros(x.shape, np.float64), np.zeros(n, np.int64)  # nested: Σ of the gradients taken
    attribution = np.zeros(x.shape, np.float32)
    while True:
        if nested:  # the midpoints of 3× finer cells, less those of the cells before
            alphas = (np.arange(count) + 0.5) / count
            fresh = alphas if count == 3 else alphas[np.arange(count) % 3 != 1]
            sums[rows] += _integrate(engine, x[rows], base[rows], target[rows], fresh, np.ones(len(fresh)), score)
            attribution[rows] = ((x[rows] - base[rows]) * sums[rows] / count).astype(np.float32)
        else:
            alphas, weights = quadrature(quadrature_rule, count)
            part = _integrate(engine, x[rows], base[rows], target[rows], alphas, weights, score)
            attribution[rows] = ((x[rows] - base[rows]) * part).astype(np.float32)
        used[rows] = count
        gap = np.abs(attribution.reshape(n, -1).sum(axis=1, dtype=np.float64) - change)
        relative = gap / np.maximum(np.abs(change), np.finfo(np.float64).tiny)
        rows = np.flatnonzero(relative > tolerance)
        finer = 3 * count if nested else 2 * count
        if not tolerance or not len(rows) or finer > max_steps:
            break
        count = finer
    warnings = [] if not tolerance or not len(rows) else [
        f"integrated_gradients: {len(rows)} of {n} input(s) stay above the tolerance {tolerance:g} at {count} steps "
        f"(relative completeness gap up to {relative[rows].max():.3g}); raise --param max_steps"]
    diagnostics = {"completeness_gap": gap, "baseline_score": base_score}
    if tolerance:
        diagnostics.update(steps=used, relative_gap=relative)
    return Explanation(attribution, sum_over_channels(engine, attribution), target, values, "integrated_gradients",
                       timings={"integrate": time.perf_counter() - start}, diagnostics=diagnostics, warnings=warnings)


def _integrate(engine, x, base, target, alphas: np.ndarray, weights: np.ndarray, score: str) -> np.ndarray:
    """Σ_k weights[k] ∇f(base + alphas[k] (x − base)) (float64), the points batched a chunk of
    engine batches at a time."""
    delta = x - base
    seed_rows = engine.one_hot(target, score)
    total = np.zeros_like(x, dtype=np.float64)
    for chunk in copy_chunks(engine, len(x), len(alphas)):
        a = alphas[chunk].astype(np.float32)
        points = (base[None] + a.reshape(-1, *[1] * x.ndim) * delta[None]).reshape(-1, *x.shape[1:])
        result = engine.vjp(points, tile_rows(seed_rows, len(a)), score=score)
        grads = result.grads[engine.input_name].reshape(len(a), *x.shape)
        total += np.tensordot(weights[chunk], grads.astype(np.float64), axes=1)
    return total


#: How each base method reduces an attribution to a heatmap (its default).
HEATMAP_REDUCTION = {
    "gradient": max_abs_over_channels, "guided_backprop": max_abs_over_channels, "deconvnet": max_abs_over_channels,
    "input_x_gradient": sum_over_channels, "integrated_gradients": sum_over_channels,
}
_NOISE_TUNNELS = {"smoothgrad": "mean", "smoothgrad_squared": "mean of squares", "vargrad": "variance"}


def _noise_tunnel(kind, engine, x, target, base, samples, sigma, seed, noise, score):
    if base not in HEATMAP_REDUCTION:
        raise MethodError(f"base must be one of {', '.join(HEATMAP_REDUCTION)}, got {base!r}")
    base_info = method_info(base)
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float32)
        if noise.ndim < 1 or noise.shape[1:] != x.shape:
            raise MethodError(f"noise must have shape (samples, *{x.shape}), got {noise.shape}")
        samples = len(noise)
    rng = np.random.default_rng(seed)
    span = (x.reshape(len(x), -1).max(axis=1) - x.reshape(len(x), -1).min(axis=1)) * sigma
    span = span.reshape(1, -1, *[1] * (x.ndim - 1))
    # Noisy copies are drawn and explained a chunk of samples at a time, so memory stays that of
    # one engine batch whatever ``samples`` is; the sums are float64.
    total = np.zeros(x.shape, np.float64)
    squares = np.zeros(x.shape, np.float64)
    for chunk in copy_chunks(engine, len(x), samples):
        count = chunk.stop - chunk.start
        part = (noise[chunk] if noise is not None
                else rng.standard_normal((count, *x.shape)).astype(np.float32) * span)
        noisy = (x[None] + part).reshape(-1, *x.shape[1:])
        inner = base_info.fn(engine, noisy, tile_rows(target, count), score=score)
        attrs = inner.attribution.reshape(count, *x.shape).astype(np.float64)
        total += attrs.sum(axis=0)
        squares += (attrs ** 2).sum(axis=0)
    mean = total / samples
    attribution = {"smoothgrad": mean, "smoothgrad_squared": squares / samples,
                   "vargrad": np.maximum(squares / samples - mean ** 2, 0.0)}[kind].astype(np.float32)
    values = target_scores(engine.forward(x)[engine.score_name(score)], target)
    return Explanation(attribution, HEATMAP_REDUCTION[base](engine, attribution), target, values, kind,
                       params={"samples": samples})


def _register_noise_tunnel(kind):
    def tunnel(engine, x, target, *, base: str = "gradient", samples: int = 50, sigma: float = 0.15,
               seed: int = 0, noise=None, score: str = "logit") -> Explanation:
        return _noise_tunnel(kind, engine, x, target, base, samples, sigma, seed, noise, score)

    tunnel.__doc__ = (f"SmoothGrad noise tunnel — {_NOISE_TUNNELS[kind]} of ``base`` over noisy copies "
                      "(Smilkov et al., 2017, arXiv:1706.03825; VarGrad: Adebayo et al., 2018). Noise σ is "
                      "``sigma`` × the input's value range (0.15 as in the paper), seeded; ``noise`` (API "
                      "only) gives the exact noise array of shape (samples, *x.shape).")
    method(kind)(tunnel)


for _kind in _NOISE_TUNNELS:
    _register_noise_tunnel(_kind)


@method("deeplift")
def deeplift(engine, x, target, *, rule: str = "rescale", maxpool: str = "rescale", baseline="zeros",
             blur_sigma: float = 5.0, seed: int = 0, score: str = "logit") -> Explanation:
    """DeepLIFT (Shrikumar et al., 2017, arXiv:1704.02685): attribution = (x − x₀) ⊙ multipliers.
    ``rule="rescale"`` (Captum's formulation): nonlinearities pass Δy/Δx. ``rule="reveal_cancel"``
    (the paper's Sec. 3.5.3): positive and negative contributions to each layer's pre-activation
    pass the nonlinearity with their own multipliers, so they no longer cancel unseen.
    ``maxpool="rescale"`` routes Δy through MaxPool (summation-to-delta exact);
    ``maxpool="gradient"`` keeps MaxPool's gradient; with ``rule="rescale"`` that reproduces
    Captum's DeepLift, which drops the MaxPool multipliers after a ReLU and has no rule for Clip
    (ReLU6) or HardSwish. Baselines as Integrated Gradients. ``diagnostics['summation_gap']`` =
    |Σ attribution − (f(x) − f(x₀))|."""
    if rule not in ("rescale", "reveal_cancel"):
        raise MethodError(f"rule must be 'rescale' or 'reveal_cancel', got {rule!r}")
    rules = DEEPLIFT_RULES.get((rule, maxpool))
    if rules is None:
        raise MethodError(f"maxpool must be 'rescale' or 'gradient', got {maxpool!r}")
    if engine.batch_size < 2:
        raise MethodError("deeplift runs inputs and references in one batch; this model takes a fixed batch of 1")
    base = make_baseline(engine, x, baseline, blur_sigma, seed)
    step = engine.batch_size // 2
    multipliers, scores = [], []
    for start in range(0, len(x), step):
        xs, bs, ts = x[start:start + step], base[start:start + step], target[start:start + step]
        seeds = engine.one_hot(np.concatenate([ts, ts]), score)
        result = engine.vjp(np.concatenate([xs, bs]), seeds, rules=rules, score=score)
        multipliers.append(result.grads[engine.input_name][: len(xs)])
        scores.append(target_scores(result.scores, np.concatenate([ts, ts])).reshape(2, -1))
    attribution = ((x - base) * np.concatenate(multipliers)).astype(np.float32)
    values, base_score = np.concatenate(scores, axis=1)
    gap = np.abs(attribution.reshape(len(x), -1).sum(axis=1) - (values - base_score))
    return Explanation(attribution, sum_over_channels(engine, attribution), target, values, "deeplift",
                       diagnostics={"summation_gap": gap, "baseline_score": base_score})
