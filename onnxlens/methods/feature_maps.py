"""The feature map a layer method reads: the default layer, and any layer's activations and
gradients as [N, C, h, w] whatever their layout (pytorch-grad-cam's ``reshape_transform``,
found from the shape instead of written by hand)."""

from __future__ import annotations

import weakref

import numpy as np

from onnxlens.errors import quote
from onnxlens.graph_ops.layers import MapLayout, layer_candidates, map_layout
from onnxlens.methods.registry import MethodError

#: engine → score kind → default layer (finding it may take a gradient run)
_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_layer(engine, x: np.ndarray | None = None, target: np.ndarray | None = None,
                  score: str = "logit") -> str:
    """The deepest candidate feature map (``onnxlens inspect --layers``) whose grid reaches the
    score. Behind a class-token readout (ViT, DeiT) the patch tokens after the last attention
    reach it not at all: their gradient is exactly zero. There the default is the deepest
    token map that still feeds an attention — the input of the last block's attention,
    pytorch-grad-cam's ``blocks[-1].norm1`` — found by one gradient run on the first row of
    ``x`` (default: a uniform random image) for its ``target`` (default: its top class)."""
    if x is None:
        x = np.random.default_rng(0).random((1, *engine.probe_row_shape)).astype(engine.spec.image_input.dtype)
        engine = engine.for_input(x)
    candidates = engine.layers()
    if not candidates:
        raise MethodError(_no_map(engine))
    if candidates[-1].layout.kind != "tokens":
        return candidates[-1].name
    chosen = _DEFAULTS.setdefault(engine, {})
    if score not in chosen:
        if target is None:
            target = engine.forward(x[:1])[engine.score_name(score)].reshape(1, -1).argmax(axis=1)
        tokens = [c for c in candidates if c.layout.kind == "tokens"]
        grads = engine.vjp(x[:1], engine.one_hot(target[:1], score), wrt=[c.name for c in tokens], score=score).grads
        live = [c for c in candidates if c.layout.kind != "tokens" or np.any(c.layout.channels_first(grads[c.name]))]
        if not live:
            raise MethodError("no feature map of the model reaches its score: every token map's patch positions "
                              "have zero gradient; pass layer=NAME")
        chosen[score] = live[-1].name
    return chosen[score]


def _no_map(engine) -> str:
    others = layer_candidates(engine.graph, engine.input_name, engine.score_name(), engine.spatial_size(),
                              engine.model.fixed_batch, aligned=False)
    listed = ", ".join(f"{quote(c.name)} {list(c.shape)}" for c in others[-5:])
    return ("the model has no feature map on the path to its score (a grid aligned with the image: [N, C, h, w], "
            "[N, h, w, C] or patch tokens [N, T, D])" + (f"; 4-D tensors that could be read as [N, C, h, w]: "
                                                         f"{listed} (pass one as layer=NAME)" if listed else ""))


def layout_of(engine, layer: str, a: np.ndarray, rows: int) -> MapLayout:
    """How the activations ``a`` of ``layer`` (for ``rows`` inputs) lie; any other 4-D tensor
    with one row per input is read as [N, C, h, w], as asked for by name."""
    layout = map_layout(a.shape, rows, engine.spatial_size())
    if layout is None and a.ndim == 4 and len(a) == rows:
        layout = MapLayout("channels_first", a.shape[2:])
    if layout is None:
        raise MethodError(f"layer {quote(layer)} has shape {list(a.shape)}; layer methods need a feature map: "
                          "[N, C, h, w], [N, h, w, C] or patch tokens [N, T, D] on the image's grid")
    return layout
