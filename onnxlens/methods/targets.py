"""What a method explains: one scalar per input row read from one of the model's outputs.

A class-score vector [N, C] gives the score of class K (the default: the predicted class). A
dense output [N, C, H, W] (segmentation; [N, H, W, C] beside a channels-last input) gives the
sum of class K's scores over a region — a mask, a box, the pixels predicted as K, or the whole
image — as pytorch-grad-cam's ``SemanticSegmentationTarget``. A sequence output [N, T, C] (CTC
text recognition) gives class K's score at step t, or the sum along the greedy-decoded path; a
sequence's probability score, its default, is the log-probability, so that sum is the path's
log-likelihood (:func:`log_probability_engine`).
Every kind is linear in the score tensor, so it is one weight tensor per row: the seed that
gradient, CAM and relevance methods start the backward pass from, and the weights that
perturbation methods sum forward scores with.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onnxlens.errors import OnnxLensError, quote
from onnxlens.limits import check as check_limit


class TargetError(OnnxLensError):
    """A target spec that does not parse, or that does not fit the model's output."""


#: the keys a target spec takes, and the ones that stand alone
KEYS = ("class", "output", "region", "box", "match", "step")
FLAGS = ("predicted", "sequence", "objectness")
#: the extra output a detection target adds: one box's class scores [N, C]
BOX_OUTPUT = "onnxlens_box"
#: the extra output a target on a model that runs NonMaxSuppression adds: the scores it reads [N, C·B]
CANDIDATES_OUTPUT = "onnxlens_candidates"
#: the extra output a sequence's probability score adds: its log-probabilities [N, T, C]
LOG_PROBABILITY_OUTPUT = "onnxlens_log_probability"


@dataclass(frozen=True)
class Target:
    """Class ``cls`` (an int, one per input row, or None: the predicted class) of the model
    output ``output`` (None: the first output); on a dense output, summed over ``region`` (a
    mask file — ``.npy`` or an image — or an array [H, W] or [N, H, W]; nonzero is inside), over
    ``box`` (x0, y0, x1, y1 in input pixels) and/or over the ``predicted`` pixels of the class; on
    a sequence output, at ``step`` t, or along the greedy-decoded path (``sequence``, the default
    there); on a detector's boxes [N, B, 4 (+1) + C] or [N, 4 (+1) + C, B], ``box`` I (an int):
    that box's class scores, times its ``objectness`` (column 4) where the model has one; or,
    per row, the box that best ``match``es (x0, y0, x1, y1) by IoU among boxes of the class.
    ``weights``: a target already resolved — one weight tensor per row over the score tensor,
    with ``cls`` its class per row — as an explanation carries it (``Explanation.weights``), to
    explain other inputs or another model for the same number."""

    cls: int | Sequence[int] | None = None
    output: str | None = None
    region: str | Path | np.ndarray | None = None
    box: tuple[float, float, float, float] | int | None = None
    predicted: bool = False
    step: int | None = None
    sequence: bool = False
    objectness: bool = False
    match: tuple[float, float, float, float] | None = None
    weights: np.ndarray | None = None

    @classmethod
    def parse(cls, spec: str) -> Target:
        """``"3"`` (a class), or comma-separated ``class=K``, ``output=NAME``, ``region=MASK``,
        ``box=x0,y0,x1,y1`` or ``box=I``, ``predicted``, ``step=T``, ``sequence``, ``objectness``."""
        text = spec.strip()
        if text.lstrip("-").isdigit():
            return cls(cls=int(text))
        expected = (f"expected a class index or comma-separated {', '.join(k + '=…' for k in KEYS)}, "
                    f"{', '.join(FLAGS)} (each once)")
        parts = [p.strip() for p in text.split(",")]
        fields: dict[str, str | bool] = {}
        while parts:
            part = parts.pop(0)
            if not part:
                continue
            key, sep, value = (p.strip() for p in part.partition("="))
            if key in ("box", "match") and sep:  # four numbers are comma-separated too
                more = 0
                while more < 3 and more < len(parts) and "=" not in parts[more] and parts[more] not in FLAGS:
                    more += 1
                value, parts = ",".join([value, *parts[:more]]), parts[more:]
            if key in FLAGS and not sep and key not in fields:
                fields[key] = True
            elif sep and key in KEYS and key not in fields and value:
                fields[key] = value
            else:
                raise TargetError(f"target {quote(spec)}: {expected}; got {quote(part)}")
        if not fields:
            raise TargetError(f"target {quote(spec)} is empty; give a class index or class=K,output=NAME")
        return cls(cls=_integer(spec, "class", fields.get("class")), output=fields.get("output"),
                   region=fields.get("region"), box=_box(spec, fields.get("box")),
                   predicted=bool(fields.get("predicted")), step=_integer(spec, "step", fields.get("step")),
                   sequence=bool(fields.get("sequence")), objectness=bool(fields.get("objectness")),
                   match=_match(spec, fields.get("match")))

    def describe(self) -> str:
        """The spec of this target's kind beyond its class and output (empty for a class)."""
        region = self.region if self.region is None or isinstance(self.region, (str, Path)) else "array"
        parts = [f"region={region}" if region is not None else "",
                 f"box={self.box}" if self.detection else
                 "box=" + ",".join(f"{v:g}" for v in self.box) if self.box else "",
                 "predicted" if self.predicted else "", f"step={self.step}" if self.step is not None else "",
                 "sequence" if self.sequence else "", "objectness" if self.objectness else "",
                 "match=" + ",".join(f"{v:g}" for v in self.match) if self.match else ""]
        return ",".join(p for p in parts if p)

    @property
    def detection(self) -> bool:
        """Whether this target is one box of a detector's output (``box`` an index)."""
        return isinstance(self.box, (int, np.integer)) and not isinstance(self.box, bool)


def _integer(spec: str, key: str, value) -> int | None:
    if value is None:
        return None
    if not value.lstrip("-").isdigit():
        raise TargetError(f"target {quote(spec)}: {key} must be an integer, got {quote(value)}")
    return int(value)


def _match(spec: str, value) -> tuple[float, ...] | None:
    box = _box(spec, value)
    if isinstance(box, int):
        raise TargetError(f"target {quote(spec)}: match takes a box x0,y0,x1,y1 in input pixels, got {quote(value)}")
    return box


def _box(spec: str, value) -> tuple[float, ...] | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise TargetError(f"target {quote(spec)}: box takes a box index I (a detector's) or four numbers "
                          f"x0,y0,x1,y1 (input pixels, a region), got {quote(value)}")
    return box


def given_weights(target: Target, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(class per row, weights) of a target with its ``weights`` given, checked against the
    ``rows`` explained (the weights' fit to the score tensor is the seed's check)."""
    if target.describe():
        raise TargetError(f"weights are a resolved target: give them with a class only, not {target.describe()}")
    weights = np.asarray(target.weights, np.float32)
    if weights.ndim < 2 or len(weights) != rows:
        raise TargetError(f"target weights of shape {list(weights.shape)} must hold one weight tensor for each of "
                          f"the {rows} input row(s)")
    return np.broadcast_to(np.asarray(-1 if target.cls is None else target.cls, np.int64), (rows,)).copy(), weights


def detection_engine(engine, target: Target, x: np.ndarray):
    """(An engine over the model with one more output, :data:`BOX_OUTPUT`: box ``target.box``'s
    class scores [N, C], times its objectness with ``target.objectness``; the class target on
    it). Boxes lie along the longer of the output's two axes after the batch; a box's features
    are 4 coordinates, the objectness where the model has one, then the class scores (YOLO's
    layouts, pytorch-grad-cam's detection targets)."""
    from onnx import helper, numpy_helper

    nms = nms_nodes(engine)
    if nms:
        return _nms_candidate(engine, target, x, nms)
    out = engine.spec.output(engine.output)
    box_axis, features, first = _detector_layout(engine.forward(x[:1])[out.name].shape, target, out.name)
    name = BOX_OUTPUT
    initializers = [numpy_helper.from_array(np.array(target.box, np.int64), f"{name}/index"),
                    numpy_helper.from_array(np.arange(first, features, dtype=np.int64), f"{name}/classes"),
                    numpy_helper.from_array(np.array([4], np.int64), f"{name}/objectness")]
    nodes = [helper.make_node("Gather", [out.name, f"{name}/index"], [f"{name}/row"], axis=box_axis),
             helper.make_node("Gather", [f"{name}/row", f"{name}/classes"],
                              [f"{name}/scores" if target.objectness else name], axis=1)]
    if target.objectness:
        nodes += [helper.make_node("Gather", [f"{name}/row", f"{name}/objectness"], [f"{name}/obj"], axis=1),
                  helper.make_node("Mul", [f"{name}/scores", f"{name}/obj"], [name])]
    key = f"box={target.box},objectness={target.objectness},output={out.name}"
    # a detector scores each class on its own: its box scores are probabilities as they are
    derived = _derived_output(engine, key, name, [features - first], nodes, initializers,
                              activation="Sigmoid", logits=None)
    return derived, Target(target.cls)


def nms_nodes(engine) -> list:
    """The model's NonMaxSuppression nodes: a detector that keeps its boxes itself."""
    return [node for node in engine.model.model.graph.node if node.op_type == "NonMaxSuppression"]


def _nms_candidate(engine, target: Target, x: np.ndarray, nms: list):
    """:func:`detection_engine` of a model that runs NonMaxSuppression itself and returns the
    kept boxes' scores (boxes, labels…) as outputs: an engine over the model with one more
    output, :data:`CANDIDATES_OUTPUT`, the scores NMS reads [N, C, B] flattened to [N, C·B],
    and per row the class target of the candidate that output detection ``box`` I (the
    candidate whose score the kept scores [N, K] hold at I: the output given, else the model's
    one float output of that rank) or that best ``match``es
    (IoU of NMS's own input boxes, read by its ``center_point_box``) — of class ``cls`` when
    given. The explained number is that candidate's score before NMS; NMS's choice stays fixed."""
    from onnx import helper

    if len(nms) > 1:
        raise TargetError(f"box targets read one NonMaxSuppression; the model runs {len(nms)}")
    node = nms[0]
    boxes_in, scores_in, selected = node.input[0], node.input[1], node.output[0]
    center = next((a.i for a in node.attribute if a.name == "center_point_box"), 0)
    out = engine.spec.output(engine.output)
    kept_scores = [o.name for o in engine.spec.outputs if len(o.shape or ()) == 2 and "float" in o.dtype]
    chosen = engine.output is not None or out.name in kept_scores or len(kept_scores) != 1
    shown_name = out.name if chosen else kept_scores[0]
    flatten = [helper.make_node("Flatten", [scores_in], [CANDIDATES_OUTPUT], axis=1)]
    derived = _derived_output(engine, f"nms_candidates,output={out.name}", CANDIDATES_OUTPUT, [None], flatten, [],
                              activation="Sigmoid", logits=None)
    what = f"box={target.box}" if target.detection else "match=" + ",".join(f"{v:g}" for v in target.match)
    classes = None if target.cls is None else np.broadcast_to(target.cls, (len(x),))
    picked = []
    for n in range(len(x)):  # one row per run: NMS's batch index is the row's
        values = derived.forward(x[n:n + 1], (boxes_in, selected, shown_name))
        scores = values[CANDIDATES_OUTPUT][0].astype(np.float64)
        kept = values[selected][values[selected][:, 0] == 0]
        boxes = values[boxes_in].shape[1]
        flat = kept[:, 1] * boxes + kept[:, 2]
        if target.detection:
            shown = values[shown_name]
            if shown.ndim != 2 or not np.issubdtype(shown.dtype, np.floating):
                raise TargetError(f"{what} on a model that runs NonMaxSuppression reads the kept boxes' scores "
                                  f"[N, K]; output {quote(shown_name)} is {list(shown.shape)} {shown.dtype}: give "
                                  "output=NAME of the scores")
            if not 0 <= target.box < shown.shape[1]:
                raise TargetError(f"{what}: row {n} keeps {shown.shape[1]} box(es) in output {quote(shown_name)}")
            gap = np.abs(scores[flat] - shown[0, target.box]) if len(flat) else np.array([np.inf])
            if gap.min() > 1e-6 * max(1.0, abs(float(shown[0, target.box]))):
                raise TargetError(f"{what}: no box NonMaxSuppression kept in row {n} has the score output "
                                  f"{quote(shown_name)} holds at {target.box}")
            best = int(np.argmin(gap))
        else:
            iou = _iou(values[boxes_in][0, kept[:, 2]].astype(np.float64), target.match, center)
            if classes is not None:
                iou = np.where(kept[:, 1] == classes[n], iou, -1.0)
            if not len(iou) or iou.max() <= 0:
                of = "" if target.cls is None else f" of class {target.cls}"
                raise TargetError(f"no box{of} that NonMaxSuppression kept overlaps {what} in row {n}")
            best = int(np.argmax(iou))
        cls = kept[best, 1] if classes is None else classes[n]
        picked.append(int(cls) * boxes + int(kept[best, 2]))
    return derived, Target(np.asarray(picked, np.int64))


def _iou(boxes: np.ndarray, box, center: int) -> np.ndarray:
    """IoU of [K, 4] boxes — corners as NonMaxSuppression reads them (any diagonal pair, y
    first), or x and y centre, width and height (``center`` 1) — with ``box`` x0, y0, x1, y1."""
    if center:
        cx, cy, w, h = boxes.T
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        y0, x0 = np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3])
        y1, x1 = np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])
    bx0, by0, bx1, by1 = box
    overlap = (np.clip(np.minimum(x1, bx1) - np.maximum(x0, bx0), 0, None)
               * np.clip(np.minimum(y1, by1) - np.maximum(y0, by0), 0, None))
    return overlap / np.maximum((x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - overlap, 1e-12)


def log_probability_engine(engine):
    """An engine over the model with one more output, :data:`LOG_PROBABILITY_OUTPUT`: the
    log-softmax over the classes of the explained sequence output's logits [N, T, C] — the
    per-step log-probabilities whose sum along a path is its log-likelihood (CTC, Graves et al.,
    2006) — explained as that model's probability score. A model that ends in LogSoftmax has
    them already: then ``engine`` itself."""
    from onnx import helper

    out = engine.spec.output(engine.output)
    if out.activation == "LogSoftmax":
        return engine
    logits = out.logits or out.name
    nodes = [helper.make_node("LogSoftmax", [logits], [LOG_PROBABILITY_OUTPUT], axis=-1)]
    return _derived_output(engine, f"log_probability,output={out.name}", LOG_PROBABILITY_OUTPUT,
                           list(out.shape[1:]) if out.shape else [None, None], nodes, [],
                           activation="LogSoftmax", logits=logits)


def _derived_output(engine, key: str, name: str, row, nodes, initializers, **spec):
    """``engine.derived`` over the model with ``nodes`` (and ``initializers``) appended and their
    tensor ``name`` (``row``: its dims after the batch, None where unknown) made the explained
    output, its output spec given the fields ``spec``."""
    import onnx
    from onnx import helper

    from onnxlens.runtime.model_import import import_model

    source = engine.spec.output(engine.output).name

    def build():
        model = onnx.ModelProto()
        model.CopyFrom(engine.model.model)
        graph = model.graph
        graph.initializer.extend(initializers)
        graph.node.extend(nodes)
        dtype = next(o.type.tensor_type.elem_type for o in graph.output if o.name == source)
        if dtype not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            dtype = onnx.TensorProto.FLOAT  # the explained output may be a detector's labels
        batch = engine.spec.image_input.shape[0]
        dims = [batch if isinstance(batch, int) else "N", *(d if isinstance(d, int) else None for d in row)]
        graph.output.append(helper.make_tensor_value_info(name, dtype, dims))
        imported = import_model(model.SerializeToString(), layout=engine.spec.image_input.layout)
        outputs = tuple(replace(o, **spec) if o.name == name else o for o in imported.spec.outputs)
        return replace(imported, spec=replace(imported.spec, outputs=outputs))

    return engine.derived(key, build).with_output(name)


def _detector_layout(shape, target: Target, name: str) -> tuple[int, int, int]:
    """(the boxes' axis, features per box, the first class feature) of a detector's output."""
    described = "[" + ", ".join(["N", *map(str, shape[1:])]) + "]"
    what = f"box={target.box}" if target.detection else f"match={','.join(f'{v:g}' for v in target.match)}"
    if len(shape) != 3:
        raise TargetError(f"{what} picks a box of a detector's output [N, boxes, features]; output "
                          f"{quote(name)} is {described}")
    box_axis = 1 if shape[1] >= shape[2] else 2
    boxes, features = shape[box_axis], shape[3 - box_axis]
    first = 5 if target.objectness else 4
    if (target.detection and not 0 <= target.box < boxes) or features <= first:
        raise TargetError(f"{what} on output {quote(name)} {described}: {boxes} boxes of {features} features "
                          f"(4 coordinates{', the objectness' if target.objectness else ''}, then the classes)")
    return box_axis, features, first


def matched_boxes(engine, x: np.ndarray, target: Target) -> np.ndarray:
    """Per row, the index of the box (cx, cy, w, h in input pixels, as YOLO decodes them) of
    highest IoU with ``target.match`` among the boxes whose top class is ``target.cls`` (any
    class when None)."""
    name = engine.spec.output(engine.output).name
    out = engine.forward(x)[name]
    box_axis, _, first = _detector_layout(out.shape, target, name)
    rows = np.moveaxis(out, box_axis, 1).astype(np.float64)  # [N, boxes, features]
    iou = _iou(rows[..., :4].reshape(-1, 4), target.match, center=1).reshape(rows.shape[:2])
    if target.cls is not None:
        iou = np.where(rows[..., first:].argmax(axis=2) == np.asarray(target.cls).reshape(-1, 1), iou, -1.0)
    missing = iou.max(axis=1) <= 0
    if missing.any():
        of = "" if target.cls is None else f" of class {target.cls}"
        raise TargetError(f"no box{of} overlaps match={','.join(f'{v:g}' for v in target.match)} in row(s) "
                          f"{np.flatnonzero(missing)[:5].tolist()} of output {quote(name)}")
    return iou.argmax(axis=1)


def class_axis(ndim: int, channel_axis: int) -> int:
    """The class axis of a score tensor with ``ndim`` axes: the last of a class vector [N, C]
    or a sequence [N, T, C]; for a dense map, the input's channel axis (1 or 3)."""
    return channel_axis if ndim == 4 else ndim - 1


def resolve(target: Target, scores: np.ndarray, channel_axis: int, input_hw: tuple[int, int],
            name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(class per row, weights) of ``target`` on the score tensor ``scores`` (one row per input,
    named ``name``): weights is None for a class of a class vector, else the [N, *row] weights
    whose sum against the scores is the explained scalar. The default class (``cls`` None) is the
    arg-max of the scores summed over the region, and ``-1`` along a decoded sequence."""
    rows, ndim = len(scores), scores.ndim
    shape = "[" + ", ".join(["N", *map(str, scores.shape[1:])]) + "]"
    if target.detection:
        raise TargetError(f"box={target.box} picks a box of a detector's output [N, boxes, features]; output "
                          f"{quote(name)} is {shape}")
    kind = {2: "class-score vector", 3: "sequence", 4: "dense map"}.get(ndim)
    if kind is None:
        raise TargetError(f"output {quote(name)} is {shape}; onnxlens explains class-score vectors [N, C], "
                          "dense maps [N, C, H, W] and sequences [N, T, C]")
    axis = class_axis(ndim, channel_axis)
    classes = scores.shape[axis]
    wrong = {2: ("region", "box", "predicted", "step", "sequence"), 3: ("region", "box", "predicted"),
             4: ("step", "sequence")}[ndim]
    given = [k for k in wrong if getattr(target, k) not in (None, False)]
    if given:
        apply = {"step": "sequence outputs [N, T, C]", "sequence": "sequence outputs [N, T, C]"}
        where = apply.get(given[0], "dense outputs [N, C, H, W]")
        raise TargetError(f"output {quote(name)} is {shape}, a {kind}: {given[0]} applies to {where}")
    cls = None if target.cls is None else np.broadcast_to(np.asarray(target.cls, np.int64), (rows,)).copy()
    if cls is not None and ((cls < 0) | (cls >= classes)).any():
        raise TargetError(f"target must be a class index in 0..{classes - 1}, got {cls.tolist()}")
    if ndim == 2:
        return (scores.reshape(rows, -1).argmax(axis=1) if cls is None else cls), None
    if ndim == 3:
        return _sequence_weights(target, scores, cls, shape)
    return _dense_weights(target, np.moveaxis(scores, axis, 1), cls, input_hw, shape, axis)


def _sequence_weights(target: Target, scores: np.ndarray, cls, shape: str):
    rows, steps, _ = scores.shape
    weights = np.zeros(scores.shape, np.float32)
    if target.step is None:
        if cls is not None:
            raise TargetError(f"a class applies to one step of the sequence {shape}: give step=t with class=K")
        path = scores.argmax(axis=2)
        weights[np.arange(rows)[:, None], np.arange(steps), path] = 1.0
        return np.full(rows, -1, np.int64), weights
    if not 0 <= target.step < steps:
        raise TargetError(f"step must be in 0..{steps - 1} for the sequence {shape}, got {target.step}")
    cls = scores[:, target.step].argmax(axis=1) if cls is None else cls
    weights[np.arange(rows), target.step, cls] = 1.0
    return cls, weights


def _dense_weights(target: Target, scores: np.ndarray, cls, input_hw, shape: str, axis: int):
    """Weights over a dense map; ``scores`` has its class axis moved to 1."""
    rows, classes, height, width = scores.shape
    if target.region is not None and target.box is not None:
        raise TargetError("give a region or a box, not both")
    mask = np.ones((rows, height, width), bool)
    if target.region is not None:
        mask = region_mask(target.region, rows, (height, width), input_hw)
    elif target.box is not None:
        mask = np.zeros_like(mask)
        mask[:, slice(*_box_span(target.box, 1, height, input_hw[0])),
             slice(*_box_span(target.box, 0, width, input_hw[1]))] = True
    if cls is None:
        cls = np.einsum("nchw,nhw->nc", scores, mask).argmax(axis=1)
    if target.predicted:
        mask = mask & (scores.argmax(axis=1) == cls[:, None, None])
    empty = ~mask.reshape(rows, -1).any(axis=1)
    if empty.any():
        what = "holds no pixel predicted as its class" if target.predicted else "is empty"
        raise TargetError(f"the target region {what} in row(s) {np.flatnonzero(empty)[:5].tolist()} "
                          f"of the dense output {shape}")
    weights = (np.arange(classes)[None, :, None, None] == cls[:, None, None, None]) * mask[:, None]
    return cls, np.ascontiguousarray(np.moveaxis(weights.astype(np.float32), 1, axis))


def _box_span(box, coordinate: int, size: int, input_size: int) -> tuple[int, int]:
    """The output-grid span of the box's x (``coordinate`` 0) or y (1) extent, given in input
    pixels of an input ``input_size`` wide."""
    low, high = box[coordinate], box[coordinate + 2]
    if not 0 <= low < high <= input_size:
        raise TargetError(f"box {','.join(f'{v:g}' for v in box)} must satisfy 0 ≤ x0 < x1 ≤ width and "
                          f"0 ≤ y0 < y1 ≤ height of the input")
    scale = size / input_size
    return int(np.floor(low * scale)), max(int(np.ceil(high * scale)), int(np.floor(low * scale)) + 1)


def region_mask(region, rows: int, output_hw: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """A boolean [rows, H, W] mask at the output's size from a mask file (``.npy``: nonzero is
    inside; an image: gray above 127) or array ([H, W] for every row, or [rows, H, W]) at the output's
    or the input's size (then resized to the output's, nearest)."""
    if isinstance(region, (str, Path)):
        mask = _read_mask(Path(region))
    else:
        mask = np.asarray(region)
    if mask.ndim == 2:
        mask = np.broadcast_to(mask, (rows, *mask.shape))
    if mask.ndim != 3 or len(mask) != rows or mask.shape[1:] not in (tuple(output_hw), tuple(input_hw)):
        raise TargetError(f"the region mask has shape {list(mask.shape)}; it takes [H, W] or [{rows}, H, W] at "
                          f"the output's size {list(output_hw)} or the input's {list(input_hw)}")
    return nearest(mask, output_hw) != 0


def nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, h, w] maps resized to ``size`` (H, W) by nearest sampling at pixel centres."""
    if maps.shape[1:] == tuple(size):
        return maps
    ys = ((np.arange(size[0]) + 0.5) * maps.shape[1] // size[0]).astype(int)
    xs = ((np.arange(size[1]) + 0.5) * maps.shape[2] // size[1]).astype(int)
    return maps[:, ys][:, :, xs]


def _read_mask(path: Path) -> np.ndarray:
    """A ``.npy`` mask as stored, or an image mask's gray levels above 127."""
    from PIL import Image  # only a mask file needs Pillow

    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with warnings.catch_warnings():  # PIL's own bomb warning; the limit below is stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            check_limit("image_pixels", image.size[0] * image.size[1], f"region mask {quote(str(path))}")
            return np.asarray(image.convert("L")) > 127
    except Image.DecompressionBombError:
        raise TargetError(f"the region mask {quote(str(path))} has more pixels than Pillow decodes") from None
    except (OSError, ValueError) as error:
        raise TargetError(f"cannot read the region mask {quote(str(path))}: "
                          f"{quote(str(error) or type(error).__name__)}") from None


def target_scores(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Row i's explained score, from score tensors with one row per input: its score of class
    ``target[i]``, or — for a weight tensor per row (region and sequence targets) — the sum of
    its scores weighted by ``target[i]``."""
    rows = scores.reshape(len(target), -1)
    if not is_weights(target):
        return rows[np.arange(len(target)), target]
    if target.strides[0] == 0:  # one row's weights broadcast over copies of that row
        return (rows.astype(np.float64) @ target[0].reshape(-1)).astype(scores.dtype)
    return np.einsum("nk,nk->n", rows.astype(np.float64), target.reshape(len(target), -1)).astype(scores.dtype)


def is_weights(target: np.ndarray) -> bool:
    """Whether a method's ``target`` is a weight tensor per row rather than a class per row."""
    return np.ndim(target) > 1


def tile_rows(values: np.ndarray, count: int) -> np.ndarray:
    """``values`` (a class or a weight tensor per row) repeated ``count`` times along rows, as
    the copies of a batch that methods run are."""
    return np.concatenate([values] * count)
