"""Maps read from a vision transformer's attention weights, which graph surgery exposes
(:func:`onnxlens.graph_ops.layers.attention_weights`), and from their gradients."""

from __future__ import annotations

import numpy as np

from onnxlens.graph_ops.layers import attention_weights, token_grid
from onnxlens.methods.cam import layer_map_explanation
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import MethodError, method
from onnxlens.methods.seeding import seeded_vjp
from onnxlens.methods.targets import target_scores

_FUSIONS = {"mean": np.mean, "max": np.max, "min": np.min}


def _blocks(engine) -> list[str]:
    names = attention_weights(engine.graph, engine.input_name)
    if not names:
        raise MethodError("the model has no attention weights laid out [N, heads, T, T] on the image's tokens "
                          "(a vision transformer's Softmax over patch tokens); use a gradient or CAM method")
    return names


def _grid(engine, maps: dict[str, np.ndarray], rows: int, method: str) -> tuple[int, int, tuple[int, int]]:
    """(tokens, prefix, patch grid) shared by every block's [N, heads, T, T] ``maps`` of ``rows``
    inputs."""
    if any(len(a) != rows for a in maps.values()):
        raise MethodError(f"{method} needs attention over the whole image; this model attends within windows "
                          "(their weights fold the windows into the batch, as in Swin): use a gradient or CAM method")
    sizes = sorted({a.shape[-1] for a in maps.values()})
    if len(sizes) > 1:
        raise MethodError(f"{method} needs every block to attend over the same tokens; this model's blocks "
                          f"attend over {', '.join(map(str, sizes))} tokens (pooling between stages)")
    split = token_grid(sizes[0], engine.spatial_size())
    if split is None:
        raise MethodError(f"attention over {sizes[0]} tokens does not fit a grid of patches of a "
                          f"{'×'.join(map(str, engine.spatial_size()))} image")
    return sizes[0], *split


@method("attention_rollout")
def attention_rollout(engine, x, target, *, head_fusion: str = "mean", score: str = "logit") -> Explanation:
    """Attention rollout (Abnar & Zuidema, 2020, arXiv:2005.00928): each block's attention
    weights fused over heads (``head_fusion``: mean as in the paper; max or min as in Jacob
    Gildenblat's vit-explain), with the identity added for the residual path and rows
    renormalized, A = (W + I) / 2, multiplied from the first block to the last. The map is the
    class token's row over the patch tokens (the mean row where there is no class token), on
    the patch grid. Class-agnostic: ``target`` only labels the result."""
    if head_fusion not in _FUSIONS:
        raise MethodError(f"head_fusion must be one of {', '.join(_FUSIONS)}, got {head_fusion!r}")
    names = _blocks(engine)
    out = engine.forward(x, names)
    tokens, prefix, grid = _grid(engine, {n: out[n] for n in names}, len(x), "attention rollout")
    rollout = np.broadcast_to(np.eye(tokens), (len(x), tokens, tokens))
    for name in names:
        fused = _FUSIONS[head_fusion](out[name].astype(np.float64), axis=1)
        a = (fused + np.eye(tokens)) / 2
        rollout = (a / a.sum(axis=-1, keepdims=True)) @ rollout
    rows = rollout[:, 0] if prefix else rollout.mean(axis=1)
    layer_map = rows[:, prefix:].reshape(len(x), *grid)
    return layer_map_explanation(engine, x, target, target_scores(out[engine.score_name(score)], target),
                                 "attention_rollout", names[-1], layer_map, params={"head_fusion": head_fusion})


@method("legrad", predicts=True)
def legrad(engine, x, target, *, score: str = "logit") -> Explanation:
    """LeGrad (Bousselham et al., 2024, arXiv:2404.03214): the gradient of the target score
    with respect to every block's attention weights, ReLU'd, averaged over heads and over the
    query tokens (as the authors' code does), the prefix columns dropped, averaged over blocks;
    one backward run. The paper scores each block through the model's head applied to that
    block's tokens; here every block is differentiated from the model's own score."""
    names = _blocks(engine)
    result, target = seeded_vjp(engine, x, target, score, wrt=names)
    _, prefix, grid = _grid(engine, result.grads, len(x), "legrad")
    maps = [np.maximum(result.grads[n].astype(np.float64), 0).mean(axis=(1, 2))[:, prefix:] for n in names]
    return layer_map_explanation(engine, x, target, target_scores(result.scores, target), "legrad", names[-1],
                                 np.mean(maps, axis=0).reshape(len(x), *grid))
