"""Rewrite QOperator int8 graphs (QLinearConv, QGemm, QLinearAdd, …) into the equivalent QDQ
form: DequantizeLinear → the float op → QuantizeLinear, so one backward rule table (the
straight-through estimator on Quantize/DequantizeLinear, the float op's own rule) covers both
formats. Data-movement ops on quantized tensors (MaxPool, Reshape, …) are wrapped the same way
with their input's quantization parameters. ONNX Runtime fuses the QDQ form back into its
integer kernels (its QDQ selectors), so the rewritten graph computes what the deployed one does.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

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
        self.dequantized: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def emit(self, op_type, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.names(op_type), **attrs))

    def dq(self, tensor: str, scale: str, zero: str, axis: int | None = None) -> str:
        if tensor not in self.dequantized:
            out = self.names(f"dq_{tensor}")
            attrs = {} if axis is None else {"axis": axis}
            self.emit("DequantizeLinear", [tensor, scale, zero], [out], **attrs)
            self.dequantized[tensor] = out
        return self.dequantized[tensor]

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


def qoperator_to_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every QOperator node it can express in QDQ form rewritten; returns the
    model and how many nodes were rewritten (0: the model is returned unchanged)."""
    if not any(n.op_type.startswith("QLinear") or n.op_type == "QGemm" for n in model.graph.node):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rewriter = _Rewriter(out)
    rewritten = 0
    for node in out.graph.node:
        if rewriter.rewrite(node):
            rewritten += 1
        else:
            rewriter.nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(rewriter.nodes)
    out.graph.initializer.extend(rewriter.initializers)
    return out, rewritten
