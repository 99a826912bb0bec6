"""Uncertainty-aware explanations with MC dropout (Gal & Ghahramani, 2016, ICML,
arXiv:1506.02142): dropout kept on at inference, T stochastic passes batched as T copies of
each row, each drawing its own seeded keep-masks. The predictive distribution gives the mean,
its entropy and the mutual information (epistemic part); any method run under dropout gives
the pixel-wise mean and standard deviation of its map, and a *conservative* map that fades as
the model grows unsure:

    conservative = mean map × (1 − H(p̄) / log K)

with p̄ the mean predicted distribution over the K classes, so a confident model keeps its map
and a model at chance shows none.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from onnxlens.graph_ops.backward import prepare_for_differentiation
from onnxlens.graph_ops.dropout import keep_masks, with_dropout
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import MethodError, method, resolve_targets, run_method
from onnxlens.methods.targets import is_weights
from onnxlens.runtime.cache import CompiledGraphCache
from onnxlens.runtime.engine import Engine


class DropoutEngine(Engine):
    """An engine over the model with dropout on: every run draws fresh keep-masks for its rows
    from one seeded generator. ``before``: tensors to insert dropout before (default: re-enable
    the model's own Dropout nodes); ``rate``: the drop probability (default: each Dropout's own
    ratio, 0.1 where inserted)."""

    def __init__(self, base: Engine, before: tuple[str, ...] = (), rate: float | None = None, seed: int = 0):
        super().__init__(base.model, base.config, CompiledGraphCache(), base.batch_size)
        model, self.sites = with_dropout(base.model.model, tuple(before), rate)
        self.graph = self.forward_graph = prepare_for_differentiation(model)
        self.rng = np.random.default_rng(seed)

    def _batched(self, session, x, per_row):
        return super()._batched(session, x, {**per_row, **keep_masks(self.rng, self.sites, len(x))})


def predictive(engine: DropoutEngine, x: np.ndarray, samples: int) -> dict[str, np.ndarray]:
    """``samples`` stochastic passes per row: the per-pass class distributions (N×T×K, softmax
    of the class scores), their mean, its entropy (nats), the expected entropy and the mutual
    information H(p̄) − E[H(p_t)]."""
    x = engine.check_input(x)
    logits = engine.forward(np.repeat(x, samples, axis=0))[engine.score_name()]
    p = softmax(logits.reshape(len(x), samples, -1).astype(np.float64), axis=2)
    mean = p.mean(axis=1)

    def entropy(q):
        return -(q * np.log(np.clip(q, 1e-12, None))).sum(axis=-1)

    expected = entropy(p).mean(axis=1)
    return {"probabilities": p, "mean": mean, "entropy": entropy(mean), "expected_entropy": expected,
            "mutual_information": entropy(mean) - expected}


def explain_under_dropout(engine: Engine, x: np.ndarray, method_name: str, target=None, *, samples: int = 16,
                          before: tuple[str, ...] = (), rate: float | None = None, seed: int = 0,
                          conservative: bool = False, **params) -> Explanation:
    """``method_name`` run on ``samples`` dropout passes of each row (the class explained: the
    deterministic prediction unless ``target`` is given). Returns the mean attribution and map
    (or the conservative map), with ``diagnostics``: ``heatmap_std``, ``predictive_mean``,
    ``entropy``, ``mutual_information`` and ``uncertainty`` (entropy / log K)."""
    if samples < 1:
        raise MethodError(f"samples must be at least 1, got {samples}")
    x = engine.check_input(x)
    target, weights = (None, target) if is_weights(target) else resolve_targets(engine, x, target)
    if weights is not None:
        raise MethodError("mc_dropout's predictive entropy is over a class-score vector; this target is a region "
                          "or sequence target")
    stochastic = DropoutEngine(engine, before, rate, seed)
    inner = run_method(method_name, stochastic, np.repeat(x, samples, axis=0), np.repeat(target, samples), **params)
    maps = inner.heatmap.reshape(len(x), samples, *inner.heatmap.shape[1:]).astype(np.float64)
    attribution = inner.attribution.reshape(len(x), samples, *x.shape[1:]).mean(axis=1)
    stats = predictive(stochastic, x, samples)
    uncertainty = stats["entropy"] / np.log(stats["mean"].shape[1])
    heatmap = maps.mean(axis=1)
    if conservative:
        heatmap = heatmap * (1 - uncertainty)[:, None, None]
    return Explanation(attribution.astype(np.float32), heatmap, target,
                       inner.score.reshape(len(x), samples).mean(axis=1), f"mc_dropout({method_name})",
                       params={"base": method_name, "samples": samples, "rate": rate, "seed": seed,
                               "before": list(before), "conservative": conservative, **params},
                       diagnostics={"heatmap_std": maps.std(axis=1), "predictive_mean": stats["mean"],
                                    "entropy": stats["entropy"], "mutual_information": stats["mutual_information"],
                                    "uncertainty": uncertainty})


@method("mc_dropout")
def mc_dropout(engine, x, target, *, base: str = "gradient", samples: int = 16, layers: str = "", rate: float = -1.0,
               seed: int = 0, conservative: bool = False) -> Explanation:
    """Any method (``base``, with its defaults) under MC dropout (Gal & Ghahramani, 2016): the
    model's own Dropout nodes re-enabled, or dropout inserted before ``layers`` (comma-separated
    tensor names; default when the model has none — exports in eval mode usually drop them —
    the deepest feature map); ``rate`` < 0: each Dropout's own ratio (0.1 where inserted).
    Heatmap: the mean over ``samples`` passes (``conservative``: × (1 − H(p̄)/log K));
    diagnostics: the map's pixel-wise std and the predictive entropy and mutual information."""
    if base == "mc_dropout":
        raise MethodError("mc_dropout cannot wrap itself")
    from onnxlens.methods.cam import default_layer

    before = tuple(t.strip() for t in layers.split(",") if t.strip())
    if not before and not any(n.op_type == "Dropout" for n in engine.model.model.graph.node):
        before = (default_layer(engine),)
    e = explain_under_dropout(engine, x, base, target, samples=samples, before=before,
                              rate=None if rate < 0 else rate, seed=seed, conservative=conservative)
    e.method, e.params = "mc_dropout", {}  # its own parameters (run_method adds them) re-create it
    return e
