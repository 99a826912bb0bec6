"""Methods by snake_case name, all with one signature: ``fn(engine, x, target, **params)``."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from onnxlens.errors import NonFiniteResultError, OnnxLensError, quote
from onnxlens.limits import COUNT_PARAMETERS
from onnxlens.limits import check as check_limit
from onnxlens.methods.explanation import Explanation
from onnxlens.methods.targets import (Target, detection_engine, given_weights, log_probability_engine, matched_boxes,
                                      nms_nodes, resolve)


class MethodError(OnnxLensError):
    """An unknown method, an unknown parameter, or a parameter value that does not fit."""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., Explanation]
    defaults: dict  #: parameter → default value
    #: it takes target None for the predicted class, chosen in its own backward run
    predicts: bool = False


METHODS: dict[str, MethodInfo] = {}
#: Parameters every method takes besides its own: ``ste``, how an int8 graph's QuantizeLinear
#: differentiates (``clipped``: the straight-through estimator of quantization-aware
#: training; ``identity``: unclipped); ``precision``, what a float16/bfloat16 model is
#: differentiated in (``float32``: its float32 twin; ``model``: its own dtype).
COMMON_PARAMS = {"ste": "clipped", "precision": "float32"}


def method(name: str, *, predicts: bool = False):
    """Register ``fn(engine, x, target, *, params…) -> Explanation`` under ``name``;
    ``predicts``: ``fn`` takes target None on a class-score vector and explains each row's top
    class, found in the same session run as its map (its Explanation's target says which)."""

    def register(fn):
        params = list(inspect.signature(fn).parameters.values())[3:]
        defaults = {p.name: p.default for p in params}
        METHODS[name] = MethodInfo(name, fn, defaults, predicts)
        return fn

    return register


def method_info(name: str) -> MethodInfo:
    if name not in METHODS:
        raise MethodError(f"unknown method {quote(name)}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def coerce_params(info: MethodInfo, raw: dict, kind: str = "method", error: type = None) -> dict:
    """Check parameter names and turn command-line strings into the defaults' types (``info``:
    anything with ``name`` and ``defaults``, e.g. a metric's)."""
    error = error or MethodError
    defaults = {**info.defaults, **(COMMON_PARAMS if kind == "method" else {})}
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        accepted = ", ".join(sorted(defaults)) or "none"
        raise error(f"{kind} {quote(info.name)} has no parameter {', '.join(map(quote, unknown))}; "
                    f"its parameters: {accepted}")
    out = {}
    for key, value in raw.items():
        default = defaults[key]
        if not isinstance(value, str) or isinstance(default, str) or default is None:
            out[key] = value
            continue
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif isinstance(default, int):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise error(f"parameter {quote(key)} of {quote(info.name)} takes a "
                        f"{type(default).__name__}, got {quote(value)}") from None
    for key, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"parameter {quote(key)} of {quote(info.name)} must be finite, got {value}")
        if key in COUNT_PARAMETERS and isinstance(value, int) and not isinstance(value, bool):
            check_limit("parameter_count", value, f"parameter {quote(key)} of {quote(info.name)}")
    return out


def run_method(name: str, engine, x: np.ndarray, target=None, **params) -> Explanation:
    """Explain ``x`` (a batch) with method ``name``. ``target``: a class index (or one per row),
    a :class:`~onnxlens.methods.targets.Target`, its spec string (``class=K,output=NAME``,
    ``region=MASK``, ``step=T``…), or None for the arg-max class of the first output; ``params``
    are the method's own and :data:`COMMON_PARAMS`."""
    info = method_info(name)
    if isinstance(target, str):
        target = Target.parse(target)
    if not isinstance(target, Target):
        target = Target(target)
    if target.match is not None and not nms_nodes(engine):
        return _explain_matched(name, engine, x, target, params)
    params = coerce_params(info, params)
    ste = params.pop("ste", COMMON_PARAMS["ste"])
    precision = params.pop("precision", COMMON_PARAMS["precision"])
    x = engine.check_input(x)
    engine = engine.for_input(x).with_options(ste, precision)
    engine = engine.with_output(target.output) if target.output else engine  # else the engine's own
    output, described = engine.output, target.describe()
    start = time.perf_counter()
    if target.detection or target.match is not None:  # one box's class scores, a class-score output of its own
        engine, target = detection_engine(engine, target, x)
    elif _output_rank(engine) == 3 and "score" in info.defaults:
        params.setdefault("score", "probability")  # a sequence's default: its log-probability
        if params["score"] == "probability":
            engine = log_probability_engine(engine)
    if info.predicts and target.cls is None and target.weights is None and not target.describe() \
            and _output_rank(engine) == 2:  # the top class, chosen in the method's own run
        explanation = info.fn(engine, x, None, **params)
        explanation.target = np.asarray(explanation.target, np.int64)
    else:
        classes, weights = resolve_targets(engine, x, target)
        explanation = info.fn(engine, x, classes if weights is None else weights, **params)
        explanation.target, explanation.weights = classes, weights
    explanation.timings.setdefault("total", time.perf_counter() - start)
    deviation = engine.twin_deviation(x)
    if deviation is not None:
        explanation.diagnostics["float32_twin_deviation"] = deviation
    check_finite(name, explanation, len(x))
    if ste == "clipped":
        explanation.warnings += saturation_warnings(engine, x, explanation)
    explanation.params.update({k: v for k, v in (("ste", ste), ("precision", precision)) if v != COMMON_PARAMS[k]})
    explanation.params.update({k: v for k, v in (("output", output), ("target", described)) if v})
    explanation.params = {**info.defaults, **params, **explanation.params}
    return explanation


def _output_rank(engine) -> int | None:
    """The number of axes of the explained output (measured when the model declares none)."""
    out = engine.spec.output(engine.output)
    shape = engine.model.measured_shapes.get(out.name, out.shape)
    return None if shape is None else len(shape)


def _explain_matched(name: str, engine, x: np.ndarray, target: Target, params: dict) -> Explanation:
    """``target.match``: each row explained for its own best-matching box, rows that match the
    same box in one run; ``diagnostics['box']`` names the box of each row."""
    x = engine.check_input(x)
    located = engine.for_input(x)
    boxes = matched_boxes(located.with_output(target.output) if target.output else located, x, target)
    parts, order = [], []
    for box in np.unique(boxes):
        rows = np.flatnonzero(boxes == box)
        parts.append(run_method(name, engine, x[rows], replace(target, box=int(box), match=None), **params))
        order.extend(rows)
    explanation = Explanation.concatenate(parts).take(np.argsort(order))
    explanation.params = {**explanation.params, "target": target.describe()}
    explanation.diagnostics["box"] = boxes
    return explanation


def check_finite(name: str, explanation: Explanation, rows: int) -> None:
    """A NaN or infinite score or attribution is an error naming the rows, never a result."""
    for what, values in (("the model's score", explanation.score), ("the attribution", explanation.attribution)):
        broken = ~np.isfinite(np.asarray(values, dtype=np.float64).reshape(rows, -1)).all(axis=1)
        if broken.any():
            raise NonFiniteResultError(
                f"{what} is not finite (NaN or infinite) for {int(broken.sum())} of {rows} input(s), first row "
                f"{int(np.flatnonzero(broken)[0])}: {name} cannot be trusted on this model")


def saturation_warnings(engine, x: np.ndarray, explanation: Explanation) -> list[str]:
    """A line naming the quantizer nearest the output that saturates on rows whose attribution
    is exactly zero: the clipped straight-through estimator passes nothing back through
    saturated values, so a saturated output quantizer zeroes the whole gradient."""
    zero = ~explanation.attribution.reshape(len(x), -1).any(axis=1)
    if not zero.any():
        return []
    saturated = [(tensor, share) for tensor, share in engine.saturated_quantizers(x[zero]).items() if share.any()]
    if not saturated:
        return []
    tensor, share = saturated[-1]
    return [f"the attribution is exactly zero for {int(zero.sum())} of {len(x)} input(s), where the quantizer of "
            f"tensor {quote(tensor)} saturates ({100 * float(share.mean()):.0f} % of its values): the clipped "
            "straight-through estimator passes nothing back there; --param ste=identity uses the unclipped one"]


def resolve_targets(engine, x: np.ndarray, target) -> tuple[np.ndarray, np.ndarray | None]:
    """(class per row, weights) of ``target`` (a :class:`Target`, or a class or one per row, or
    None) on ``engine``'s output: weights None for a class of a class-score vector (given, else
    the arg-max), else one weight tensor per row over the score tensor
    (:func:`~onnxlens.methods.targets.resolve`)."""
    target = target if isinstance(target, Target) else Target(target)
    if target.weights is not None:
        return given_weights(target, len(x))
    plain = not target.describe()
    shape = engine.spec.output(engine.output).shape
    if plain and target.cls is not None and len(shape or ()) == 2:  # no forward pass needed
        classes = np.broadcast_to(np.asarray(target.cls, dtype=np.int64), (len(x),)).copy()
        if isinstance(shape[-1], int) and ((classes < 0) | (classes >= shape[-1])).any():
            raise MethodError(f"target must be a class index in 0..{shape[-1] - 1}, got {classes.tolist()}")
        return classes, None
    name = engine.score_name()
    scores = engine.forward(x)[name]
    if scores.shape[:1] != (len(x),):
        raise MethodError(f"the score tensor {quote(name)} has shape {list(scores.shape)} for {len(x)} input "
                          "row(s); a target is read from one row of scores per input row")
    return resolve(target, scores, engine.channel_axis, engine.spatial_size(x), name)
