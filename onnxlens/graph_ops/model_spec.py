"""What a model takes and gives: the image input and its layout, the outputs and their
trailing activation."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

from onnxlens.errors import InvalidModelError, NoImageInputError, quote
from onnxlens.graph_ops.index import graph_index
from onnxlens.graph_ops.tensors import constant_arrays, node_attr

Dim = int | str | None

LAYOUTS = ("NCHW", "NHWC")
#: Activations that turn logits into probabilities; the default score bypasses them.
TRAILING_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
# Ops that keep the layout question open while walking from the input to the first conv.
_LAYOUT_NEUTRAL = {
    "Add", "Sub", "Mul", "Div", "Cast", "Identity", "Clip", "Relu", "Neg", "Abs",
    "Reshape", "Unsqueeze", "Squeeze", "Pad", "Resize", "BatchNormalization",
}
# Shape-only ops, casts, and the quantize/dequantize pair of an int8 graph, that may sit between a
# trailing activation and the graph output.
_SHAPE_ONLY = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "QuantizeLinear", "DequantizeLinear"}
#: Ops that pass their input through at inference (dropped before differentiation).
_NO_OPS = {"Identity", "Dropout"}
_FLOAT_ELEM_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                     onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  #: numpy dtype name, e.g. "float32"
    shape: tuple[Dim, ...] | None  #: None when the rank is unknown; a str is a symbolic dim

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    layout: str = "NCHW"
    layout_evidence: str = ""

    @property
    def channels(self) -> Dim:
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]

    @property
    def spatial(self) -> tuple[Dim, Dim]:
        """(height, width)."""
        return (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])

    def to_dict(self) -> dict:
        h, w = self.spatial
        return {**super().to_dict(), "layout": self.layout, "layout_evidence": self.layout_evidence,
                "channels": self.channels, "height": h, "width": w}


@dataclass(frozen=True)
class OutputSpec(TensorSpec):
    activation: str | None = None  #: trailing Softmax / LogSoftmax / Sigmoid, if any
    logits: str | None = None  #: the tensor the trailing activation reads

    def to_dict(self) -> dict:
        return {**super().to_dict(), "activation": self.activation, "logits": self.logits}


@dataclass(frozen=True)
class ModelSpec:
    image_input: InputSpec
    other_inputs: tuple[TensorSpec, ...]
    outputs: tuple[OutputSpec, ...] = field(default=())

    def output(self, name: str | None = None) -> OutputSpec:
        """The output called ``name``, or the first output."""
        if name is None:
            return self.outputs[0]
        for out in self.outputs:
            if out.name == name:
                return out
        names = ", ".join(quote(o.name) for o in self.outputs)
        raise InvalidModelError(f"the model has no output {quote(name)}; its outputs are {names}")

    def to_dict(self) -> dict:
        return {
            "inputs": [{**self.image_input.to_dict(), "role": "image"}]
            + [{**t.to_dict(), "role": "other"} for t in self.other_inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }


def tensor_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorSpec(vi.name, dtype, shape)


def model_spec(model: onnx.ModelProto, layout: str | None = None) -> ModelSpec:
    """Describe the inputs and outputs of a (canonical) model.

    The image input is the first rank-4 floating-point input. Its layout is ``layout`` when
    given, else detected by :func:`detect_layout`.
    """
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in weights]
    image = next((vi for vi in inputs if _is_float_image(vi)), None)
    if image is None:
        found = ", ".join(f"{quote(vi.name)} {tensor_spec(vi).dtype}{list(tensor_spec(vi).shape or [])}" for vi in inputs)
        raise NoImageInputError(f"the model has no floating-point rank-4 image input (inputs: {found or 'none'})")
    base = tensor_spec(image)
    if layout is not None:
        if layout not in LAYOUTS:
            raise InvalidModelError(f"layout must be one of {', '.join(LAYOUTS)}, got {quote(layout)}")
        detected = (layout, "given by the user")
    else:
        detected = detect_layout(model, image.name, base.shape)
    image_spec = InputSpec(base.name, base.dtype, base.shape, *detected)
    others = tuple(tensor_spec(vi) for vi in inputs if vi is not image)
    outputs = tuple(_output_spec(graph, vi) for vi in graph.output)
    return ModelSpec(image_spec, others, outputs)


def detect_layout(model: onnx.ModelProto, input_name: str, shape: tuple[Dim, ...]) -> tuple[str, str]:
    """Return (layout, evidence) for an image input.

    Walks the data path from the input through layout-neutral ops (normalization, casts,
    reshapes): a Transpose with perm [0,3,1,2] means NHWC; a Conv reached directly means NCHW,
    unless a Reshape on the way moved a last axis whose size is the conv's channel count to
    axis 1 (the NHWC→NCHW change of a one-channel input). Without either, a last axis of 1,
    3 or 4 beside a larger axis 1 means NHWC.
    """
    graph = model.graph
    consumers = graph_index(graph).consumers
    constants = constant_arrays(graph)
    frontier, seen_reshape = [input_name], False
    for _ in range(32):
        next_frontier = []
        for tensor in frontier:
            for node in consumers.get(tensor, []):
                if node.input[0] != tensor and node.op_type not in ("Add", "Sub", "Mul", "Div"):
                    continue
                if node.op_type == "Transpose":
                    perm = list(node_attr(node, "perm", [3, 2, 1, 0]))
                    if perm == [0, 3, 1, 2]:
                        return "NHWC", "a Transpose with perm [0,3,1,2] follows the input"
                    if perm == [0, 2, 3, 1]:
                        return "NCHW", "a Transpose with perm [0,2,3,1] follows the input"
                elif node.op_type in ("Conv", "ConvTranspose") and node.input[0] == tensor:
                    return _layout_at_conv(node, constants, shape, seen_reshape)
                elif node.op_type in _LAYOUT_NEUTRAL:
                    seen_reshape |= node.op_type in ("Reshape", "Unsqueeze", "Squeeze")
                    next_frontier.append(node.output[0])
        if not next_frontier:
            break
        frontier = next_frontier
    return _layout_from_shape(shape)


def _layout_at_conv(conv, constants, shape, seen_reshape) -> tuple[str, str]:
    weight = constants.get(conv.input[1]) if len(conv.input) > 1 else None
    if weight is None or weight.ndim != 4:
        return "NCHW", "the first Conv reads the input (channels first)"
    group = node_attr(conv, "group", 1)
    channels = weight.shape[1] * group if conv.op_type == "Conv" else weight.shape[0]
    if seen_reshape and shape and len(shape) == 4 and shape[3] == channels and shape[1] != channels:
        return "NHWC", f"a Reshape after the input moves the last axis ({channels} channel(s)) to axis 1"
    return "NCHW", f"the first Conv reads the input with {channels} channel(s) on axis 1"


def _layout_from_shape(shape) -> tuple[str, str]:
    if shape and len(shape) == 4 and shape[3] in (1, 3, 4) and isinstance(shape[1], int) and shape[1] > 4:
        return "NHWC", f"no Conv or Transpose found; the last axis has {shape[3]} channel(s)"
    return "NCHW", "no Conv or Transpose found; channels first by default"


def _is_float_image(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return (vi.type.HasField("tensor_type") and tt.elem_type in _FLOAT_ELEM_TYPES
            and tt.HasField("shape") and len(tt.shape.dim) == 4)


def _output_spec(graph: onnx.GraphProto, vi: onnx.ValueInfoProto) -> OutputSpec:
    base = tensor_spec(vi)
    producers = graph_index(graph).producers
    node = producers.get(vi.name)
    while node is not None and node.op_type in _SHAPE_ONLY:
        node = producers.get(node.input[0])
    if node is not None and node.op_type in TRAILING_ACTIVATIONS and node.domain in ("", "ai.onnx"):
        logits = node.input[0]
        while (producer := producers.get(logits)) is not None and producer.op_type in _NO_OPS:
            logits = producer.input[0]  # the name that survives dropping no-op nodes
        return OutputSpec(base.name, base.dtype, base.shape, node.op_type, logits)
    return OutputSpec(base.name, base.dtype, base.shape)
