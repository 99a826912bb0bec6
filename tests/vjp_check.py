"""Directional finite-difference checks of appended backward graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxlens.graph_ops import expose
from onnxlens.graph_ops.backward import append_vjp
from onnxlens.runtime.model_import import record_shapes


def _session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_run_shapes(model, feeds):
    """The model with every tensor's shape measured by running it (ONNX's inference is wrong
    for some pools)."""
    model = onnx.shape_inference.infer_shapes(model)
    inner = [vi.name for vi in model.graph.value_info]
    session = _session(expose(model, inner))
    values = session.run(None, feeds)
    shapes = {o.name: tuple(v.shape) for o, v in zip(session.get_outputs(), values)}
    return record_shapes(model, shapes)[0]


def vjp_and_fd(model, feeds, wrt, output, rules=None, eps=1e-2, seed=0):
    """Return (⟨vjp(seed), d⟩, central difference of ⟨seed, f⟩ along d) for random seed and d."""
    model = with_run_shapes(model, feeds)
    rng = np.random.default_rng(seed)
    vjp = append_vjp(model, [output], [wrt], rules)
    forward = _session(model)
    out_index = [o.name for o in forward.get_outputs()].index(output)
    y = forward.run(None, feeds)[out_index]
    cotangent = rng.standard_normal(y.shape).astype(np.float32)
    backward = _session(vjp.model)
    names = [o.name for o in backward.get_outputs()]
    grad = backward.run(None, {**feeds, vjp.seeds[output]: cotangent})[names.index(vjp.grads[wrt])]
    direction = rng.standard_normal(feeds[wrt].shape).astype(np.float32)

    def f(t):
        shifted = dict(feeds, **{wrt: (feeds[wrt].astype(np.float64) + t * direction).astype(np.float32)})
        return float((forward.run(None, shifted)[out_index].astype(np.float64) * cotangent).sum())

    fd = (f(eps) - f(-eps)) / (2 * eps)
    return float((grad.astype(np.float64) * direction).sum()), fd, grad
