"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Guided Grad-CAM, Eigen-CAM,
Eigen-Grad-CAM, Layer-CAM and FEM.

Each returns ``layer_map`` (N×h×w at the layer's resolution, before upsampling, with the ReLU
where the method has one and no normalization) and ``heatmap`` (upsampled bilinearly to the
input size and scaled to [0, 1] per image). ``layer`` is any feature map: channels-first,
channels-last or patch tokens (:mod:`onnxlens.methods.feature_maps`); by default the deepest
one that reaches the score (``onnxlens inspect --layers``).
The formulas follow pytorch-grad-cam (Grad-CAM++ weights, the Eigen-CAM projection, FEM's
k-sigma rule) and Captum (Grad-CAM's channel means).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from onnxlens.graph_ops.backward.rulesets import GUIDED_BACKPROP
from onnxlens.graph_ops.index import graph_index
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.feature_maps import default_layer, layout_of
from onnxlens.methods.registry import MethodError, method
from onnxlens.methods.seeding import seeded_vjp
from onnxlens.methods.targets import target_scores
from onnxlens.scaling import unit_scale


def _activations_and_grads(engine, x, target, layer, score):
    """(target per row, layer, activations, gradients — both [N, C, h, w] — and target scores)
    from one run; a None target is the predicted class, chosen in that run."""
    layer = layer or default_layer(engine, x, target, score)
    result, target = seeded_vjp(engine, x, target, score, wrt=[layer], tensors=[layer])
    a = result.tensors[layer]
    layout = layout_of(engine, layer, a, len(x))
    return (target, layer, layout.channels_first(a).astype(np.float64),
            layout.channels_first(result.grads[layer]).astype(np.float64), target_scores(result.scores, target))


def _activations(engine, x, target, layer, score):
    """(layer, its activations as [N, C, h, w], target scores) from one forward run, for
    gradient-free maps."""
    layer = layer or default_layer(engine, x, target, score)
    out = engine.forward(x, [layer])
    a = layout_of(engine, layer, out[layer], len(x)).channels_first(out[layer])
    return layer, a.astype(np.float64), target_scores(out[engine.score_name(score)], target)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of N×h×w maps to N×H×W."""
    h, w = size
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32)).resize((w, h), Image.BILINEAR)) for m in maps])


def layer_map_explanation(engine, x, target, values, name, layer, layer_map, attribution=None,
                          params=None) -> Explanation:
    """The explanation of a map at a layer's grid: heatmap = the map upsampled to the input and
    scaled to [0, 1]; attribution = the heatmap on every channel unless given."""
    spatial = engine.spatial_size(x)
    heatmap = np.stack([unit_scale(m) for m in upsample(layer_map, spatial)]).astype(np.float32)
    if attribution is None:  # a CAM attributes to the input through its upsampled map, per channel alike
        attribution = np.broadcast_to(np.expand_dims(heatmap, engine.channel_axis), x.shape).astype(np.float32)
    return Explanation(attribution, heatmap, target, values, name, params={"layer": layer, **(params or {})},
                       layer_map=layer_map.astype(np.float32))


def _weighted(weights, a):
    return np.einsum("nk,nkhw->nhw", weights, a)


@method("gradcam", predicts=True)
def gradcam(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """Grad-CAM (Selvaraju et al., 2017, arXiv:1610.02391): ReLU(Σ_k mean_ij(∂y/∂A_k) · A_k)."""
    target, layer, a, g, values = _activations_and_grads(engine, x, target, layer, score)
    return layer_map_explanation(engine, x, target, values, "gradcam", layer,
                                 np.maximum(_weighted(g.mean(axis=(2, 3)), a), 0))


@method("gradcam_plus_plus", predicts=True)
def gradcam_plus_plus(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """Grad-CAM++ (Chattopadhyay et al., 2018, arXiv:1710.11063): channel weights
    Σ_ij ReLU(g) · g² / (2g² + Σ_ij A · g³), as pytorch-grad-cam computes them."""
    target, layer, a, g, values = _activations_and_grads(engine, x, target, layer, score)
    g2, g3 = g ** 2, g ** 3
    alpha = g2 / (2 * g2 + a.sum(axis=(2, 3), keepdims=True) * g3 + 1e-6)
    alpha = np.where(g != 0, alpha, 0)
    weights = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    return layer_map_explanation(engine, x, target, values, "gradcam_plus_plus", layer,
                                 np.maximum(_weighted(weights, a), 0))


@method("layercam", predicts=True)
def layercam(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """Layer-CAM (Jiang et al., 2021, IEEE TIP 30): ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k)."""
    target, layer, a, g, values = _activations_and_grads(engine, x, target, layer, score)
    return layer_map_explanation(engine, x, target, values, "layercam", layer,
                                 np.maximum((np.maximum(g, 0) * a).sum(axis=1), 0))


def first_component_projection(maps: np.ndarray) -> np.ndarray:
    """Project each (C, h, w) map on its first principal component over positions (centered
    SVD, sign as numpy's SVD gives it — pytorch-grad-cam's convention)."""
    out = []
    for m in maps:
        flat = m.reshape(m.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        out.append((flat @ vt[0]).reshape(m.shape[1:]))
    return np.stack(out)


@method("eigencam")
def eigencam(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """Eigen-CAM (Muhammad & Yeasin, 2020, arXiv:2008.00299): the activations' first principal
    component, ReLU'd. Class-agnostic: ``target`` only labels the result."""
    layer, a, values = _activations(engine, x, target, layer, score)
    return layer_map_explanation(engine, x, target, values, "eigencam", layer,
                                 np.maximum(first_component_projection(a), 0))


@method("eigengradcam", predicts=True)
def eigengradcam(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """Eigen-Grad-CAM (pytorch-grad-cam): the first principal component of gradient ⊙ activation."""
    target, layer, a, g, values = _activations_and_grads(engine, x, target, layer, score)
    return layer_map_explanation(engine, x, target, values, "eigengradcam", layer,
                                 np.maximum(first_component_projection(g * a), 0))


@method("fem")
def fem(engine, x, target, *, layer: str | None = None, k: float = 1.0, score: str = "logit") -> Explanation:
    """FEM, the K-sigma feature explanation method (Fuad et al., 2020, IPTA): channel weight =
    share of positions above mean + k·std; map = ReLU(Σ_k w_k A_k). k = 1 as in the survey
    (pytorch-grad-cam defaults to 2). Gradient-free and class-agnostic."""
    layer, a, values = _activations(engine, x, target, layer, score)
    threshold = a.mean(axis=(2, 3), keepdims=True) + k * a.std(axis=(2, 3), keepdims=True)
    weights = (a > threshold).mean(axis=(2, 3))
    return layer_map_explanation(engine, x, target, values, "fem", layer,
                                 np.maximum(_weighted(weights, a), 0), params={"k": k})


@method("guided_gradcam", predicts=True)
def guided_gradcam(engine, x, target, *, layer: str | None = None, interpolation: str = "nearest",
                   score: str = "logit") -> Explanation:
    """Guided Grad-CAM (Selvaraju et al., 2017): Guided Backprop ⊙ the Grad-CAM map upsampled
    to the input (nearest by default, as Captum's GuidedGradCam; or bilinear)."""
    cam = gradcam(engine, x, target, layer=layer, score=score)
    spatial = engine.spatial_size(x)
    if interpolation == "nearest":
        rows = np.floor(np.arange(spatial[0]) * cam.layer_map.shape[1] / spatial[0]).astype(int)
        cols = np.floor(np.arange(spatial[1]) * cam.layer_map.shape[2] / spatial[1]).astype(int)
        up = cam.layer_map[:, rows][:, :, cols]
    elif interpolation == "bilinear":
        up = upsample(cam.layer_map, spatial)
    else:
        raise MethodError(f"interpolation must be nearest or bilinear, got {interpolation!r}")
    guided = engine.vjp(x, engine.one_hot(cam.target, score), rules=GUIDED_BACKPROP,
                        score=score).grads[engine.input_name]
    attribution = (guided * np.expand_dims(up, engine.channel_axis)).astype(np.float32)
    heatmap = np.stack([unit_scale(m) for m in np.abs(attribution).max(axis=engine.channel_axis)]).astype(np.float32)
    return Explanation(attribution, heatmap, cam.target, cam.score, "guided_gradcam",
                       params={"layer": cam.params["layer"]}, layer_map=cam.layer_map)


@method("cam", predicts=True)
def cam(engine, x, target, *, layer: str | None = None, score: str = "logit") -> Explanation:
    """CAM (Zhou et al., 2016, arXiv:1512.04150): Σ_k w_k A_k with w the linear head's weights
    of the target class. Only for a layer that feeds global average pooling and then a linear
    head; no ReLU (the map is signed)."""
    layer = layer or default_layer(engine, x, target, score)
    pooled = gap_linear_head(engine, layer, engine.score_name(score))
    result, target = seeded_vjp(engine, x, target, score, wrt=[pooled], tensors=[layer])
    weights = result.grads[pooled].reshape(len(x), -1).astype(np.float64)
    a = result.tensors[layer]
    a = layout_of(engine, layer, a, len(x)).channels_first(a).astype(np.float64)
    return layer_map_explanation(engine, x, target, target_scores(result.scores, target), "cam", layer,
                                 _weighted(weights, a))


_POOLS = ("GlobalAveragePool", "ReduceMean")
_LINEAR_HEAD = ("Flatten", "Reshape", "Squeeze", "Gemm", "MatMul", "Add", "Identity")


def gap_linear_head(engine, layer: str, score: str) -> str:
    """The pooled tensor when ``layer`` → global average pool → linear ops → ``score``; a
    MethodError naming what is there otherwise."""
    wiring = graph_index(engine.graph.graph)
    users = wiring.consumers_of(layer)
    pool = users[0] if len(users) == 1 else None
    if pool is None or pool.op_type not in _POOLS:
        found = ", ".join(n.op_type for n in users) or "nothing"
        raise MethodError(f"cam needs the layer to feed global average pooling (it feeds {found}); use gradcam")
    t = pool.output[0]
    while t != score:
        nxt = wiring.consumers_of(t)
        if len(nxt) != 1 or nxt[0].op_type not in _LINEAR_HEAD:
            found = ", ".join(n.op_type for n in nxt) or "nothing"
            raise MethodError(f"cam needs a linear head after the pooling (found {found}); use gradcam")
        t = nxt[0].output[0]
    return pool.output[0]
