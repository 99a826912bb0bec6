"""Layer-wise relevance propagation (Bach et al., 2015, PLoS ONE 10(7): e0130140) with Zennit's
composites, and Deep Taylor decomposition as a preset (Montavon et al., 2017)."""

from __future__ import annotations

import numpy as np

from onnxlens.graph_ops.backward.relevance import PRESETS, composite
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.feature_maps import layout_of
from onnxlens.methods.gradients import sum_over_channels
from onnxlens.methods.registry import MethodError, method
from onnxlens.methods.seeding import seeded_vjp
from onnxlens.methods.targets import is_weights, target_scores


def _relevance(engine, x, target, preset, layer, score, max_gap, **rule_params):
    try:
        rules = composite(preset, **rule_params)
    except ValueError as exc:
        raise MethodError(str(exc)) from None
    if layer is not None:
        engine.require_tensor(layer)
    # the candidates' totals are row sums, so maps laid out batch-second ([T, N, D]) sit out
    layers = [c.name for c in engine.layers() if c.layout.batch_axis == 0 and c.name != layer]
    # every rule is linear in the relevance it receives, so seeding the one-hot vector and
    # scaling by the score afterwards equals seeding R = score, without a separate forward pass;
    # a region or sequence target seeds each weighted output with its own score (R = w ⊙ z);
    # the layers' relevance comes back as row sums (the conservation check), the chosen layer's whole
    wrt = [engine.input_name] + ([layer] if layer is not None else [])
    if is_weights(target):
        seed = engine.one_hot(target, score) * engine.forward(x)[engine.score_name(score)]
        result = engine.vjp(x, seed, wrt=wrt, rules=rules, score=score, totals=layers)
    else:  # a class per row, or None: the predicted class, chosen in the same run
        result, target = seeded_vjp(engine, x, target, score, wrt=wrt, rules=rules, totals=layers)
    values = target_scores(result.scores, target)
    scale = np.ones_like(values) if is_weights(target) else values
    grads = result.grads[engine.input_name]
    attribution = grads * scale.reshape(-1, *[1] * (grads.ndim - 1))
    gaps = {engine.input_name: np.abs(attribution.reshape(len(x), -1).sum(axis=1) - values)}
    gaps.update({name: np.abs(total * scale - values) for name, total in result.totals.items()})
    layer_map = None
    if layer is not None:
        layout = layout_of(engine, layer, result.grads[layer], len(x))
        rows = np.moveaxis(result.grads[layer], layout.batch_axis, 0).reshape(len(x), -1).sum(axis=1)
        gaps[layer] = np.abs(rows * scale - values)  # over every token, the class token's too
        layer_map = layout.channels_first(result.grads[layer]).sum(axis=1) * scale[:, None, None]
    total = attribution.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    ratio = total / np.where(values == 0, np.nan, values)
    return Explanation(attribution, sum_over_channels(engine, attribution), target, values, "lrp",
                       params={"rules": rules.name}, layer_map=layer_map,
                       diagnostics={"conservation_gap": gaps, "relevance_ratio": ratio},
                       warnings=unconserved(total, values, max_gap, rule_params.get("zero_bias") is False))


def unconserved(total: np.ndarray, values: np.ndarray, max_gap: float, biases: bool = False) -> list[str]:
    """One line when relevance is not conserved: |Σ input relevance − score| above ``max_gap``
    times the batch's mean |score| on some rows (measured against the mean, a row whose own
    score is near zero is not judged by a ratio that its bias terms alone can swing); ``biases``:
    the rules kept the biases, so the line names ``zero_bias``."""
    gap = np.abs(total - values) / max(float(np.mean(np.abs(values))), 1e-12)
    off = ~(gap <= max_gap)  # NaN counts as off
    if not off.any():
        return []
    worst = np.nan_to_num(gap[off], nan=np.inf).max()
    hint = "; --param zero_bias=true leaves biases out, where they absorb it" if biases else ""
    return [f"relevance is not conserved for {int(off.sum())} of {len(gap)} input(s): |Σ relevance − score| is up "
            f"to {worst:.3g}× the mean |score| (allowed: {max_gap:g}, --param max_gap); these maps do not "
            f"decompose the score{hint}"]


@method("lrp", predicts=True)
def lrp(engine, x, target, *, preset: str = "epsilon_plus_flat", epsilon: float = 1e-6, gamma: float = 0.25,
        alpha: float = 2.0, beta: float = 1.0, low: float = 0.0, high: float = 1.0, stabilizer: float = 1e-6,
        zero_bias: bool = False, layer: str | None = None, score: str = "logit", max_gap: float = 0.5) -> Explanation:
    """Layer-wise relevance propagation with a Zennit composite (``preset``: one of
    epsilon, epsilon_plus, epsilon_plus_flat, epsilon_alpha2_beta1, epsilon_alpha2_beta1_flat,
    epsilon_gamma_box, deep_taylor). The output relevance is the explained score; attribution =
    input relevance, heatmap = its sum over channels; ``layer`` adds that tensor's relevance
    (summed over channels) as ``layer_map``; ``diagnostics['conservation_gap']`` gives
    |Σ relevance − score| at the input and at every candidate layer, ``relevance_ratio`` Σ input
    relevance / score; |Σ relevance − score| above ``max_gap`` × the mean |score| adds a warning.
    ``zero_bias`` leaves biases (BatchNorm's folded shifts too) out of every layer's z, as
    Zennit's ``zero_params='bias'``: relevance is then conserved where biases would absorb it."""
    if preset not in PRESETS:
        raise MethodError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _relevance(engine, x, target, preset, layer, score, max_gap, epsilon=epsilon, gamma=gamma, alpha=alpha,
                      beta=beta, low=low, high=high, stabilizer=stabilizer, zero_bias=zero_bias)


@method("deep_taylor", predicts=True)
def deep_taylor(engine, x, target, *, low: float = 0.0, high: float = 1.0, stabilizer: float = 1e-6,
                layer: str | None = None, score: str = "logit", max_gap: float = 0.5) -> Explanation:
    """Deep Taylor decomposition (Montavon et al., 2017, Pattern Recognit. 65:211–222): z⁺ in
    hidden layers, z^B with bounds ``low``/``high`` at the input."""
    e = _relevance(engine, x, target, "deep_taylor", layer, score, max_gap, low=low, high=high, stabilizer=stabilizer)
    e.method = "deep_taylor"
    return e
