"""Rewrites applied before differentiation: fold inference BatchNorm into the layer before it,
fuse a dense MatMul + bias Add into Gemm, drop no-op nodes, and pick the score tensor (the
logit behind a trailing activation)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlens.errors import InvalidTargetError, quote
from onnxlens.graph_ops.index import replace_nodes
from onnxlens.graph_ops.model_spec import ModelSpec
from onnxlens.graph_ops.tensors import constant_arrays, node_attr


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Fold every BatchNormalization that directly follows a Conv or Gemm with constant
    weights (and is that layer's only consumer) into the layer; returns (model, folded count).
    BatchNorms that cannot be folded exactly stay as their own affine op."""
    out, graph, consts, producers, consumers, outputs, inits = _rewrite_facts(model)
    drop, folded = set(), 0
    for index, bn in enumerate(graph.node):
        if bn.op_type != "BatchNormalization" or any(bn.output[1:]):
            continue
        layer = producers.get(bn.input[0], (None, None))[1]
        params = [consts.get(name) for name in bn.input[1:5]]
        if layer is None or layer.op_type not in ("Conv", "Gemm") or any(p is None for p in params):
            continue
        if consumers.get(bn.input[0], 0) != 1 or bn.input[0] in outputs or consumers.get(layer.input[1], 0) != 1:
            continue
        scale, shift, mean, var = (p.astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + node_attr(bn, "epsilon", 1e-5))
        folded_layer = _fold_into(layer, factor, shift - mean * factor, consts)
        if folded_layer is None:
            continue
        weight, bias = folded_layer
        _set_initializer(graph, inits, layer.input[1], weight)
        bias_name = layer.input[2] if len(layer.input) > 2 and layer.input[2] else f"{layer.input[1]}__folded_bias"
        _set_initializer(graph, inits, bias_name, bias)
        while len(layer.input) < 3:
            layer.input.append("")
        layer.input[2] = bias_name
        if layer.op_type == "Gemm":
            _set_attr(layer, "beta", 1.0)
        layer.output[0] = bn.output[0]
        drop.add(index)
        folded += 1
    _drop_nodes(graph, drop)
    return out, folded


def _rewrite_facts(model):
    """A copy of ``model`` to rewrite, with (graph, constants, tensor → (index, producer),
    tensor → consumer count, graph output names, name → initializer)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producers = {o: (i, n) for i, n in enumerate(graph.node) for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            consumers[name] = consumers.get(name, 0) + 1
    inits = {t.name: t for t in graph.initializer}
    return out, graph, constant_arrays(graph), producers, consumers, {o.name for o in graph.output}, inits


def _drop_nodes(graph, indices):
    """Remove the nodes at ``indices`` (positions: protobuf wrappers have no stable identity)."""
    if indices:
        kept = [n for i, n in enumerate(graph.node) if i not in indices]
        replace_nodes(graph, kept)


def _fold_into(layer, factor, offset, consts):
    weight = consts.get(layer.input[1])
    if weight is None or (len(layer.input) > 2 and layer.input[2] and layer.input[2] not in consts):
        return None
    bias = consts[layer.input[2]].astype(np.float64) if len(layer.input) > 2 and layer.input[2] else 0.0
    w = weight.astype(np.float64)
    if layer.op_type == "Conv":
        if w.shape[0] != factor.size:
            return None
        w = w * factor.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        if node_attr(layer, "transA", 0) or w.ndim != 2:
            return None
        alpha, beta = node_attr(layer, "alpha", 1.0), node_attr(layer, "beta", 1.0)
        w = w * factor[:, None] if node_attr(layer, "transB", 0) else w * factor[None, :]
        bias = bias * beta
        if alpha != 1.0:
            return None
    bias = np.broadcast_to(bias, factor.shape) * factor + offset
    return w.astype(weight.dtype), bias.astype(weight.dtype)


def _set_initializer(graph, inits, name, value):
    tensor = numpy_helper.from_array(value, name)
    if name in inits:
        inits[name].CopyFrom(tensor)
    else:
        graph.initializer.append(tensor)
        inits[name] = graph.initializer[-1]


def _set_attr(node, name, value):
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(helper.make_attribute(name, value))


def fuse_matmul_add(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace MatMul(x, W) + Add(·, b) by Gemm(x, W, b) where x is 2-D, W a constant 2-D
    matrix and b a constant of W's column count (how TensorFlow and some torch exports write a
    dense layer), so relevance rules see the bias as part of the layer. Exact; returns
    (model, fused count)."""
    out, graph, consts, producers, consumers, outputs, inits = _rewrite_facts(model)
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in (*graph.input, *graph.value_info)
             if vi.type.tensor_type.HasField("shape")}
    drop = set()
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for side in (0, 1):
            index, matmul = producers.get(add.input[side], (None, None))
            if matmul is None or matmul.op_type != "MatMul":
                continue
            weight, bias = consts.get(matmul.input[1]), consts.get(add.input[1 - side])
            if (weight is None or weight.ndim != 2 or bias is None
                    or ranks.get(matmul.input[0]) != 2 or consumers.get(add.input[side]) != 1
                    or add.input[side] in outputs or bias.size != weight.shape[1]
                    or bias.shape not in ((weight.shape[1],), (1, weight.shape[1]))):
                continue
            bias_name = f"{add.input[1 - side]}__gemm_bias"
            _set_initializer(graph, inits, bias_name, bias.reshape(-1).astype(weight.dtype))
            gemm = helper.make_node("Gemm", [matmul.input[0], matmul.input[1], bias_name], [add.output[0]],
                                    name=matmul.name or add.name)
            add.CopyFrom(gemm)
            drop.add(index)
            break
    _drop_nodes(graph, drop)
    return out, len(drop)


def fold_dequantized_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace every QuantizeLinear/DequantizeLinear of constant inputs — an int8 graph's
    weights and biases, stored quantized or quantized in the graph — by its value (ONNX's
    reference semantics), so rules that need constant weights (relevance, DeepLIFT) see the
    dequantized ones; returns (model, count)."""
    from onnx.reference import ReferenceEvaluator

    out, graph, consts, _, _, outputs, inits = _rewrite_facts(model)
    drop, values = set(), {}
    for index, node in enumerate(graph.node):
        inputs = [i for i in node.input if i]
        if (node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in ("", "ai.onnx")
                or not all(i in consts for i in inputs)):
            continue
        results = ReferenceEvaluator(node).run(None, {i: consts[i] for i in inputs})
        for name, value in zip(node.output, results):
            consts[name] = values[name] = np.asarray(value)
        drop.add(index)
    _drop_nodes(graph, drop)
    needed = {i for n in graph.node for i in n.input} | outputs
    for name, value in values.items():
        if name in needed:
            _set_initializer(graph, inits, name, value)
    return out, len(drop)


def drop_noops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Remove Identity and (inference) Dropout nodes, wiring consumers to their input; one
    whose output is a graph output stays (as Identity). Returns (model, removed count)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    outputs = {o.name for o in graph.output}
    rename, kept, removed = {}, [], 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        if node.op_type in ("Identity", "Dropout") and node.domain in ("", "ai.onnx"):
            if node.output[0] not in outputs and not any(node.output[1:]):
                rename[node.output[0]] = node.input[0]
                removed += 1
                continue
            if node.op_type == "Dropout":
                del node.input[1:]
                del node.output[1:]
                node.op_type = "Identity"
        kept.append(node)
    replace_nodes(graph, kept)
    infos = [vi for vi in graph.value_info if vi.name not in rename]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return out, removed


#: Which score of a class is explained: the logit, or the probability (the model's output).
SCORES = ("logit", "probability")


def check_score(score: str) -> str:
    """``score`` if it names one of :data:`SCORES`; one clear error otherwise."""
    if score not in SCORES:
        raise InvalidTargetError(f"score must be one of {', '.join(SCORES)}, got {quote(str(score))}")
    return score


def score_tensor(spec: ModelSpec, output: str | None = None, score: str = "logit") -> str:
    """The tensor to explain: for ``score="logit"`` (the default) the logits behind a trailing
    Softmax/LogSoftmax/Sigmoid (probability gradients vanish when the model is confident); for
    ``score="probability"`` the output itself."""
    check_score(score)
    out = spec.output(output)
    return out.name if score == "probability" or out.logits is None else out.logits
