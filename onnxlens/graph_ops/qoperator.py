"""Rewrite QOperator int8 graphs (QLinearConv, QGemm, QLinearAdd, …) into the equivalent QDQ
form: DequantizeLinear → the float op → QuantizeLinear, so one backward rule table (the
straight-through estimator on Quantize/DequantizeLinear, the float op's own rule) covers both
formats. Data-movement ops on quantized tensors (MaxPool, Reshape, …) are wrapped the same way
with their input's quantization parameters. ONNX Runtime fuses the QDQ form back into its
integer kernels (its QDQ selectors), so the rewritten graph computes what the deployed one does.

Dynamically quantized graphs (ONNX Runtime's ``quantize_dynamic``) compute
``Cast(MatMulInteger(qa, qb, za, zb)) · (sa · sb)`` (ConvInteger alike); that chain becomes the
float op on ``DequantizeLinear(qa, sa, za)`` and ``DequantizeLinear(qb, sb, zb)`` — the same
value up to float32 rounding (the integer product is exact, the float one rounds), in the
QDQ form whose dynamic quantizer then differentiates like a static one.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlens.graph_ops.index import graph_index, replace_nodes
from onnxlens.graph_ops.tensors import NameAllocator, constant_arrays, node_attr

#: op → (float op, indices of quantized data inputs as (data, scale, zero point) triples,
#: (scale, zero point) of the output, attributes not carried over)
_ELEMENTWISE = {
    "QLinearAdd": ("Add", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearMul": ("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearLeakyRelu": ("LeakyRelu", ((0, 1, 2),), (3, 4)),
    "QLinearSigmoid": ("Sigmoid", ((0, 1, 2),), (3, 4)),
    "QLinearSoftmax": ("Softmax", ((0, 1, 2),), (3, 4)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearAveragePool": ("AveragePool", ((0, 1, 2),), (3, 4)),
}
_DROPPED_ATTRS = {"channels_last", "opset"}
#: ops that only move or select values: on a quantized tensor they commute with quantization
_MOVEMENT = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Resize",
             "Slice", "Gather", "DepthToSpace", "SpaceToDepth"}


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.names = NameAllocator(model)
        self.consts = constant_arrays(model.graph)
        self.qparams: dict[str, tuple[str, str]] = {}  #: quantized tensor → (scale, zero point)
        self.dequantized: dict[tuple[str, str, str], str] = {}
        #: integer product output → (its scaled float output, scale of A, scale of B)
        self.scaled_products: dict[str, tuple[str, str, str]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def emit(self, op_type, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.names(op_type), **attrs))

    def dq(self, tensor: str, scale: str, zero: str, axis: int | None = None) -> str:
        key = (tensor, scale, zero)
        if key not in self.dequantized:
            out = self.names(f"dq_{tensor}")
            attrs = {} if axis is None else {"axis": axis}
            self.emit("DequantizeLinear", [tensor, scale, zero], [out], **attrs)
            self.dequantized[key] = out
        return self.dequantized[key]

    def q(self, value: str, scale: str, zero: str, output: str) -> None:
        self.emit("QuantizeLinear", [value, scale, zero], [output])
        self.qparams[output] = (scale, zero)

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.names(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def bias(self, bias: str, scale_a: str, scale_b: str) -> str | None:
        """A float bias from an int32 one whose scale is ``scale_a · scale_b``."""
        if not bias:
            return ""
        if not all(t in self.consts for t in (bias, scale_a, scale_b)):
            return None
        scale = (self.consts[scale_a].astype(np.float32) * self.consts[scale_b].astype(np.float32)).reshape(-1)
        return self.const((self.consts[bias].astype(np.float64) * scale).astype(np.float32), f"float_{bias}")

    def rewrite(self, node: onnx.NodeProto) -> bool:
        op, inputs = node.op_type, list(node.input) + [""] * 10
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in _DROPPED_ATTRS}
        if op == "QuantizeLinear":
            self.qparams[node.output[0]] = (inputs[1], inputs[2])
            return False
        if op in ("QLinearConv", "QLinearMatMul", "QGemm"):
            return self._linear(node, inputs, attrs)
        if op in _INTEGER_PRODUCTS:
            return self._integer_product(node, inputs, attrs)
        if op in _ELEMENTWISE:
            if node_attr(node, "channels_last", 0):
                return False
            float_op, data, (ys, yz) = _ELEMENTWISE[op]
            floats = [self.dq(inputs[d], inputs[s], inputs[z]) for d, s, z in data]
            value = self.names(f"float_{node.output[0]}")
            self.emit(float_op, floats, [value], **attrs)
            self.q(value, inputs[ys], inputs[yz], node.output[0])
            return True
        if op == "QLinearConcat":
            triples = [node.input[i:i + 3] for i in range(2, len(node.input), 3)]
            value = self.names(f"float_{node.output[0]}")
            self.emit("Concat", [self.dq(*t) for t in triples], [value], **attrs)
            self.q(value, node.input[0], node.input[1], node.output[0])
            return True
        if (op in _MOVEMENT and node.domain in ("", "ai.onnx") and node.input[0] in self.qparams
                and len([o for o in node.output if o]) == 1):
            scale, zero = self.qparams[node.input[0]]
            value = self.names(f"float_{node.output[0]}")
            self.emit(op, [self.dq(node.input[0], scale, zero), *node.input[1:]], [value], **attrs)
            self.q(value, scale, zero, node.output[0])
            return True
        return False

    def _linear(self, node, inputs, attrs) -> bool:
        op = node.op_type
        a, sa, za, b, sb, zb = inputs[:6]
        per_channel = sb in self.consts and self.consts[sb].size > 1
        if op == "QLinearConv":
            float_op, bias, (ys, yz), b_axis = "Conv", self.bias(inputs[8], sa, sb), (inputs[6], inputs[7]), 0
        elif op == "QLinearMatMul":
            float_op, bias, (ys, yz), b_axis = "MatMul", "", (inputs[6], inputs[7]), 1
        else:  # QGemm (com.microsoft): C is an int32 bias scaled by sa · sb; no y_scale: float output
            float_op, bias, (ys, yz) = "Gemm", self.bias(inputs[6], sa, sb), (inputs[7], inputs[8])
            b_axis = 0 if attrs.get("transB", 0) else 1
            attrs["beta"] = 1.0
        if bias is None:
            return False
        floats = [self.dq(a, sa, za), self.dq(b, sb, zb, b_axis if per_channel else None)]
        if bias:
            floats.append(bias)
        if not ys:
            self.emit(float_op, floats, [node.output[0]], **attrs)
            return True
        value = self.names(f"float_{node.output[0]}")
        self.emit(float_op, floats, [value], **attrs)
        self.q(value, ys, yz, node.output[0])
        return True

    def _integer_product(self, node, inputs, attrs) -> bool:
        """MatMulInteger/ConvInteger whose product is cast to float and scaled by sa · sb (as
        ``quantize_dynamic`` writes it) → the float op on the dequantized operands, writing the
        scaled output; the Cast and the scaling Mul are dropped."""
        chain = self.scaled_products.get(node.output[0])
        if chain is None:
            return False
        output, sa, sb = chain
        float_op, b_axis = _INTEGER_PRODUCTS[node.op_type]
        per_channel = sb in self.consts and self.consts[sb].size > 1
        operands = [self.dq(inputs[0], sa, inputs[2]), self.dq(inputs[1], sb, inputs[3], b_axis if per_channel else None)]
        self.emit(float_op, operands, [output], **attrs)
        return True


#: integer product → (float op, axis of B's per-channel scale and zero point)
_INTEGER_PRODUCTS = {"MatMulInteger": ("MatMul", -1), "ConvInteger": ("Conv", 0)}


def _scaled_products(graph: onnx.GraphProto, consts: dict) -> tuple[dict[str, tuple[str, str, str]], set[str]]:
    """For each integer product followed only by Cast(float) and then only by a Mul with
    ``Mul(sa, sb)`` (sa a scalar, sb constant): product output → (scaled output, sa, sb); and
    the outputs of the nodes that the rewrite leaves without a use."""
    wiring = graph_index(graph)
    producers, consumers = wiring.producers, wiring.consumers

    def only_consumer(tensor: str, op_type: str) -> onnx.NodeProto | None:
        users = wiring.consumers_of(tensor)
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    outputs = {o.name for o in graph.output}  # a tensor the graph returns stays
    chains, dropped = {}, set()
    for node in graph.node:
        if node.op_type not in _INTEGER_PRODUCTS or node.output[0] in outputs:
            continue
        cast = only_consumer(node.output[0], "Cast")
        if cast is None or node_attr(cast, "to", 0) != onnx.TensorProto.FLOAT or cast.output[0] in outputs:
            continue
        mul = only_consumer(cast.output[0], "Mul")
        scales = mul and producers.get(next((i for i in mul.input if i != cast.output[0]), ""))
        if scales is None or scales.op_type != "Mul":
            continue
        sa, sb = scales.input if scales.input[1] in consts else scales.input[::-1]
        a_zero = node.input[2] if len(node.input) > 2 else ""
        if sb not in consts or any(t in consts and consts[t].size != 1 for t in (sa, a_zero)):
            continue
        chains[node.output[0]] = (mul.output[0], sa, sb)
        dropped.update((cast.output[0], mul.output[0]))
        if len(consumers[scales.output[0]]) == 1 and scales.output[0] not in outputs:
            dropped.add(scales.output[0])
    return chains, dropped


def qoperator_to_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every QOperator node it can express in QDQ form rewritten; returns the
    model and how many nodes were rewritten (0: the model is returned unchanged)."""
    if not any(n.op_type.startswith("QLinear") or n.op_type in ("QGemm", *_INTEGER_PRODUCTS) for n in model.graph.node):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rewriter = _Rewriter(out)
    rewriter.scaled_products, dropped = _scaled_products(out.graph, rewriter.consts)
    rewritten = 0
    for node in out.graph.node:
        if node.output[0] in dropped:  # a Cast or scaling Mul folded into a rewritten product
            continue
        if rewriter.rewrite(node):
            rewritten += 1
        else:
            rewriter.nodes.append(node)
    replace_nodes(out.graph, rewriter.nodes)
    out.graph.initializer.extend(rewriter.initializers)
    return out, rewritten
