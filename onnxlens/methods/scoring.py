"""The model's class score on many perturbed copies of inputs, batched through one compiled
graph — what black-box methods (occlusion, RISE, LIME) and perturbation metrics share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy.special import log_softmax, softmax

from onnxlens.errors import InputShapeError, quote
from onnxlens.graph_ops.simplify import check_score
from onnxlens.methods.targets import class_axis, is_weights, target_scores


def score_values(engine, x: np.ndarray, score: str = "probability") -> np.ndarray:
    """The explained output's scores, one row per input: the model's probability (its own
    trailing Softmax or Sigmoid when it has one, else the softmax of its logits over the class
    axis) or the logit. A sequence's [N, T, C] probability score is its log-probability (the
    log-softmax of its logits: a path's log-likelihood is a sum of them), as
    :func:`~onnxlens.methods.targets.log_probability_engine` explains it."""
    check_score(score)
    out = engine.forward(x)
    logits = out[engine.score_name("logit")]
    spec = engine.spec.output(engine.output)
    if score == "logit":
        return logits
    if logits.ndim == 3:
        return out[spec.name] if spec.activation == "LogSoftmax" else log_softmax(logits.astype(np.float64), axis=2)
    if spec.activation in ("Softmax", "Sigmoid"):
        return out[spec.name]
    if spec.activation == "LogSoftmax":
        return np.exp(out[spec.name])
    return softmax(logits.astype(np.float64), axis=class_axis(logits.ndim, engine.channel_axis))


def class_score(engine, x: np.ndarray, target: np.ndarray, score: str = "probability") -> np.ndarray:
    """Row i's explained score (:func:`score_values` read by
    :func:`~onnxlens.methods.targets.target_scores`)."""
    return _explained(engine, score_values(engine, x, score), target)


def _explained(engine, values: np.ndarray, target: np.ndarray) -> np.ndarray:
    if not is_weights(target) and values.ndim != 2:
        raise InputShapeError(f"the score tensor {quote(engine.score_name())} is not one vector of class scores "
                              "per row; a class of it is read with a region or sequence target")
    return target_scores(values, target).astype(np.float64)


def copy_chunks(engine, rows: int, copies: int) -> list[slice]:
    """``copies`` copies of a batch of ``rows`` inputs split into slices of as many copies as
    fill one engine batch (at least one): how gradient methods over many copies (Integrated
    Gradients' steps, SmoothGrad's samples) keep each run, and memory, to one batch."""
    step = max(1, engine.batch_size // rows)
    return [slice(s, min(s + step, copies)) for s in range(0, copies, step)]


def scores_in_batches(engine, pieces: Iterable[tuple[np.ndarray, np.ndarray]], score: str = "probability"
                      ) -> np.ndarray:
    """Explained scores of every row of ``pieces`` — (copies, the target of each copy) —
    in order, the pieces gathered into session runs of about four engine batches: the one
    batched scorer of perturbation methods and metrics (memory stays that of those runs when
    ``pieces`` is a generator)."""
    out, rows, targets = [], [], []

    def flush():
        values = score_values(engine, np.concatenate(rows), score)
        starts = np.cumsum([0] + [len(r) for r in rows])
        out.extend(_explained(engine, values[a:b], t) for a, b, t in zip(starts, starts[1:], targets))

    for copies, target in pieces:
        rows.append(copies)
        targets.append(target)
        if sum(map(len, rows)) >= 4 * engine.batch_size:
            flush()
            rows, targets = [], []
    if rows:
        flush()
    return np.concatenate(out)


def scores_of_variants(engine, count: int, variants: Callable[[int], np.ndarray], target: np.ndarray,
                       score: str = "probability") -> np.ndarray:
    """(count, K) scores: ``variants(i)`` gives K perturbed copies of input i, all scored for
    ``target[i]``; copies of several inputs share session runs."""

    def pieces():
        for i in range(count):
            copies = variants(i)
            yield copies, np.broadcast_to(target[i:i + 1], (len(copies), *np.shape(target)[1:]))

    return scores_in_batches(engine, pieces(), score).reshape(count, -1)


def scores_of_copies(engine, make: Callable[[slice], np.ndarray], count: int, target: np.ndarray,
                     score: str = "probability") -> np.ndarray:
    """Scores for ``target`` (one input's: a class or a weight tensor, with its row axis) on
    ``count`` perturbed copies of that input, ``make(slice)`` giving the copies of that slice,
    built a few session batches at a time (bounded memory)."""
    step = 4 * engine.batch_size
    return scores_in_batches(engine, ((make(slice(s, min(s + step, count))),
                                       np.broadcast_to(target, (min(step, count - s), *np.shape(target)[1:])))
                                      for s in range(0, count, step)), score)


def pixel_mask(engine, mask: np.ndarray) -> np.ndarray:
    """A (…, H, W) boolean mask shaped to broadcast over input rows (channels added)."""
    return mask[..., None, :, :] if engine.channel_axis == 1 else mask[..., None]


def blurred(engine, x: np.ndarray, sigma: float = 5.0, kernel: int | None = 11) -> np.ndarray:
    """A Gaussian blur over H and W with a ``kernel``-wide window (RISE: kernel 11, σ 5; None:
    the whole Gaussian, to 4σ)."""
    from scipy import ndimage  # 0.2 s to import: only blurring methods and metrics pay it

    sigmas = [0.0] * x.ndim
    for axis in engine.spatial_axes:
        sigmas[axis] = sigma
    truncate = (kernel - 1) // 2 / sigma if kernel and sigma > 0 else 4.0
    return ndimage.gaussian_filter(x, sigmas, truncate=truncate).astype(np.float32)


SUBSTRATES = ("zero", "mean", "black", "white", "blur", "uniform")


def substrate(engine, x: np.ndarray, kind: str, seed: int = 0, sigma: float = 5.0, kernel: int | None = 11) -> np.ndarray:
    """What removed pixels become: zero (the mean of a normalized input), each image's
    per-channel mean, its minimum or maximum value (Quantus's ``black`` and ``white``), its
    blurred copy (:func:`blurred`), or uniform noise over the batch's value range (seeded).
    Callers check ``kind`` against their own choices; an unknown one is a ValueError."""
    if kind == "zero":
        return np.zeros_like(x)
    if kind in ("black", "white"):
        axes = tuple(range(1, x.ndim))
        value = x.min(axis=axes, keepdims=True) if kind == "black" else x.max(axis=axes, keepdims=True)
        return np.broadcast_to(value, x.shape).astype(np.float32)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=engine.spatial_axes, keepdims=True), x.shape).astype(np.float32)
    if kind == "blur":
        return blurred(engine, x, sigma, kernel)
    if kind == "uniform":
        return np.random.default_rng(seed).uniform(x.min(), x.max(), x.shape).astype(np.float32)
    raise ValueError(f"unknown substrate {kind!r}")
