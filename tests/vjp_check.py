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


def half_variant(model):
    """The model in float16, as a converter writes it: float inputs and the float initializers
    that feed a type-generic input lowered (Resize's scales stay float32), every other
    tensor's type as ONNX infers it from those, its measured shape kept."""
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    fixed = set()  # initializers read where the schema demands float32
    for node in graph.node:
        schema = onnx.defs.get_schema(node.op_type, opset)
        for name, param in zip(node.input, schema.inputs):
            if param.type_str == "tensor(float)":
                fixed.add(name)
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT and tensor.name not in fixed:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                                                  tensor.name))
    for vi in graph.input:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    bare = onnx.ModelProto()
    bare.CopyFrom(out)
    del bare.graph.value_info[:]
    for vi in bare.graph.output:
        vi.type.tensor_type.elem_type = 0
    inferred = onnx.shape_inference.infer_shapes(bare).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.value_info, *inferred.output)}
    for vi in (*graph.output, *graph.value_info):
        declared = vi.type.tensor_type.elem_type
        vi.type.tensor_type.elem_type = types.get(vi.name) or (
            onnx.TensorProto.FLOAT16 if declared == onnx.TensorProto.FLOAT else declared)
    return out


def half_defined(model) -> bool:
    """Whether every op of the model accepts float16 in its ONNX schema (Celu, for one, does not)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for node in model.graph.node:
        schema = onnx.defs.get_schema(node.op_type, opset)
        types = {t for c in schema.type_constraints for t in c.allowed_type_strs}
        if "tensor(float)" in types and "tensor(float16)" not in types:
            return False
    return True


def half_vjp(model, feeds, wrt, output, rules=None, seed=0):
    """The cotangent of ``wrt`` computed on the float16 variant of ``model`` (same random
    seed cotangent as :func:`vjp_and_fd`): every emitted node must type-check in float16."""
    model = with_run_shapes(model, feeds)
    half = half_variant(model)
    feeds16 = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}
    rng = np.random.default_rng(seed)
    vjp = append_vjp(half, [output], [wrt], rules)
    forward = _session(model)
    out_index = [o.name for o in forward.get_outputs()].index(output)
    y = forward.run(None, feeds)[out_index]
    backward = _session(vjp.model)
    seed_type = next(i.type for i in backward.get_inputs() if i.name == vjp.seeds[output])
    cotangent = rng.standard_normal(y.shape).astype(np.float16 if seed_type == "tensor(float16)" else np.float32)
    names = [o.name for o in backward.get_outputs()]
    return backward.run(None, {**feeds16, vjp.seeds[output]: cotangent})[names.index(vjp.grads[wrt])]
