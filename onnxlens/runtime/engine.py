"""The engine methods run on: forward passes and vector-Jacobian products of one imported
model, each compiled graph built once and cached, inputs split into memory-sized batches."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from onnxlens.errors import InputShapeError, quote
from onnxlens.graph_ops.backward import (
    RuleSet, grad_name, gradient_model, prepare_for_differentiation, seed_name, total_name,
)
from onnxlens.graph_ops.backward.compile import PREDICTED_OUTPUT
from onnxlens.graph_ops.backward.rules.quantize import unclipped
from onnxlens.graph_ops.layers import FeatureMap, layer_candidates
from onnxlens.graph_ops.quantization import quantizers
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.simplify import score_tensor
from onnxlens.runtime.cache import CompiledGraphCache
from onnxlens.runtime.memory import row_bytes, rows_within
from onnxlens.runtime.model_import import ImportedModel, has_symbolic_spatial, relative_deviation, specialize
from onnxlens.runtime.session import Session, SessionConfig

STE_MODES = ("clipped", "identity")
PRECISIONS = ("float32", "model")

def _rows(indices: np.ndarray, shown: int = 5) -> str:
    listed = ", ".join(str(i) for i in indices[:shown])
    return listed + (f" and {len(indices) - shown} more" if len(indices) > shown else "")


@dataclass(frozen=True)
class VjpResult:
    scores: np.ndarray  #: the explained tensor (logits by default), one row per input
    grads: dict[str, np.ndarray]  #: wrt tensor → cotangent, one row per input
    tensors: dict[str, np.ndarray]  #: exposed inner tensors, one row per input
    totals: dict[str, np.ndarray] = field(default_factory=dict)  #: totals tensor → its cotangent's row sums
    predicted: np.ndarray | None = None  #: the class per row a :data:`PREDICTED` seed chose


#: the seed of the predicted class: each row's top class, chosen inside the backward run
PREDICTED = "predicted"

_rows_run: ContextVar[list[int] | None] = ContextVar("rows_run", default=None)


@contextlib.contextmanager
def counting_rows() -> Iterator[list[int]]:
    """Count the input rows every engine runs through the model in this context (a forward
    pass, or a forward + backward pass, per row; padding of a fixed batch included):
    ``with counting_rows() as count: …; count[0]``. Contexts nest; each counts its own."""
    outer, counter = _rows_run.get(), [0]
    token = _rows_run.set(counter)
    try:
        yield counter
    finally:
        _rows_run.reset(token)
        if outer is not None:
            outer[0] += counter[0]


class Engine:
    """``forward`` and ``vjp`` over one model; compiled graphs are shared through ``cache``."""

    def __init__(self, model: ImportedModel, config: SessionConfig | None = None,
                 cache: CompiledGraphCache | None = None, batch_size: int | None = None, key: str | None = None):
        self.model = model
        self.spec = model.spec
        #: the graph every run uses: BatchNorm folded, no-op nodes dropped
        self.graph = prepare_for_differentiation(model.model)
        self._named: tuple[object, set[str]] = (None, set())  #: (graph, its tensor names)
        #: the graph forward passes run: a half-precision model as deployed (``graph`` is then
        #: its float32 twin), else ``graph``
        self.forward_graph = self.graph if model.deployed is None else prepare_for_differentiation(model.deployed)
        self._quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in self.graph.graph.node)
        self.config = config or SessionConfig()
        self.cache = cache or CompiledGraphCache()
        #: what compiled graphs of this engine are cached under (the model's hash, and the
        #: input size of an engine specialized to one)
        self.key = key or model.sha256
        image = self.spec.image_input
        self.row_shape = tuple(image.shape[1:])
        fixed = model.batch_rows
        #: rows per session run: a fixed batch, else what the memory budget holds (at most ``batch_size``)
        per_row = row_bytes(model.measured_shapes) + 4 * int(np.prod(self.probe_row_shape))  # tensors + the input
        budgeted = rows_within(self.config.memory_budget, per_row)
        self.batch_size = fixed or min(batch_size or budgeted, budgeted)
        self._fixed_batch = fixed
        self._requested_batch = batch_size
        self._specialized: dict[tuple, Engine] = {}
        self._specialize_lock = threading.Lock()
        self._derived: dict[str, Engine] = {}
        #: how QuantizeLinear differentiates: "clipped" (the straight-through estimator of
        #: quantization-aware training) or "identity" (unclipped)
        self.ste = "clipped"
        #: what a half-precision model differentiates in: "float32" (its twin) or "model"
        self.precision = "float32"
        #: the model output that methods explain (None: the first)
        self.output: str | None = None

    def with_options(self, ste: str | None = None, precision: str | None = None) -> Engine:
        """This engine with QuantizeLinear differentiated by the ``ste`` estimator and/or a
        half-precision model differentiated in ``precision`` (``float32``: its twin;
        ``model``: its own dtype), sharing the compiled-graph cache."""
        ste, precision = ste or self.ste, precision or self.precision
        if ste not in STE_MODES:
            raise InputShapeError(f"ste must be one of {', '.join(STE_MODES)}, got {quote(ste)}")
        if precision not in PRECISIONS:
            raise InputShapeError(f"precision must be one of {', '.join(PRECISIONS)}, got {quote(precision)}")
        if (ste, precision) == (self.ste, self.precision):
            return self
        other = copy.copy(self)
        other.ste, other.precision, other._specialized, other._specialize_lock = ste, precision, {}, threading.Lock()
        return other

    def with_output(self, output: str | None) -> Engine:
        """This engine explaining the model output ``output`` (None: the first), sharing the
        compiled-graph cache; an unknown name is an error listing the outputs."""
        if output == self.output:
            return self
        self.spec.output(output)
        other = copy.copy(self)
        other.output, other._specialized, other._specialize_lock = output, {}, threading.Lock()
        return other

    def derived(self, key: str, build: Callable[[], ImportedModel]) -> Engine:
        """An engine over a model derived from this one (``build()``: this model with a
        target's extra output), built once per ``key``, with this engine's options and sharing
        the compiled-graph cache."""
        with self._specialize_lock:
            if key not in self._derived:
                self._derived[key] = Engine(build(), self.config, self.cache, self._requested_batch,
                                            key=f"{self.key}+{key}")
            return self._derived[key].with_options(self.ste, self.precision)

    @property
    def probe_row_shape(self) -> tuple[int, ...]:
        """One input row's shape, symbolic image dims at the size the model was probed at."""
        height, width = self.model.probe_size
        symbolic = [i for i, d in enumerate(self.row_shape) if not isinstance(d, int)]
        return tuple(d if isinstance(d, int) else width if i == symbolic[-1] else height
                     for i, d in enumerate(self.row_shape))

    def for_input(self, x: np.ndarray) -> Engine:
        """This engine, or — when the model's image size is symbolic — an engine over the
        model specialized to the size of ``x`` (a batch), built once per size and sharing the
        cache: backward rules and layer search need every tensor's shape."""
        if not has_symbolic_spatial(self.model):
            return self
        return self._for_row_shape(tuple(int(d) for d in x.shape[1:]))

    def _for_row_shape(self, row_shape: tuple[int, ...]) -> Engine:
        with self._specialize_lock:
            if row_shape not in self._specialized:
                engine = Engine(specialize(self.model, row_shape), self.config, self.cache, self._requested_batch,
                                key=f"{self.model.sha256}@{'x'.join(map(str, row_shape))}")
                self._specialized[row_shape] = engine.with_options(self.ste, self.precision).with_output(self.output)
            return self._specialized[row_shape]

    @property
    def input_name(self) -> str:
        return self.spec.image_input.name

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a float32 batch shaped for the model, or a clear error: numbers only (real
        floats, integers or booleans), at least one row, every value finite."""
        x = np.asarray(x)
        shown = ", ".join("N" if e is None else str(e) for e in (None, *self.row_shape))
        takes = f"the model's input {quote(self.input_name)} takes [{shown}] ({self.spec.image_input.layout}, float32)"
        if x.dtype.kind not in "fiub":
            raise InputShapeError(f"input has dtype {x.dtype.str if x.dtype.kind == 'V' else x.dtype}; {takes}")
        if x.ndim == len(self.row_shape):
            x = x[None]
        expected = (None, *self.row_shape)
        if x.ndim != len(expected) or any(isinstance(e, int) and e != d for e, d in zip(expected[1:], x.shape[1:])):
            raise InputShapeError(f"input has shape {tuple(x.shape)}; {takes}")
        if len(x) == 0:
            raise InputShapeError(f"input has no rows (shape {tuple(x.shape)}); {takes}")
        with np.errstate(over="ignore"):  # beyond float32's range: refused just below
            x = x.astype(np.float32, copy=False)
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            raise InputShapeError(f"input row(s) {_rows(np.flatnonzero(~finite))} hold NaN or infinite values "
                                  "(or values beyond float32's range)")
        return x

    def score_name(self, score: str = "logit", output: str | None = None) -> str:
        return score_tensor(self.spec, output or self.output, score)

    def one_hot(self, target: np.ndarray, score: str = "logit", output: str | None = None) -> np.ndarray:
        """Seed cotangents of the score tensor: class ``target[i]`` in row i, or — a weight
        tensor per row (region and sequence targets) — ``target`` itself."""
        name = self.score_name(score, output)
        row = self.model.measured_shapes.get(name, self.spec.output(output or self.output).shape)[1:]
        if np.ndim(target) > 1:
            if any(isinstance(d, int) and d != t for d, t in zip(row, target.shape[1:])) or len(row) != target.ndim - 1:
                raise InputShapeError(f"target weights of shape {list(target.shape)} do not fit the score tensor "
                                      f"{quote(name)} ({list(row)} per row)")
            return np.asarray(target, np.float32)
        if len(row) != 1 or not isinstance(row[0], int):
            raise InputShapeError(f"the score tensor {quote(name)} is not one vector of class scores per row")
        seed = np.zeros((len(target), row[0]), np.float32)
        seed[np.arange(len(target)), target] = 1.0
        return seed

    @property
    def channel_axis(self) -> int:
        """The channel axis of an input batch: 1 (NCHW) or 3 (NHWC)."""
        return 1 if self.spec.image_input.layout == "NCHW" else 3

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The H and W axes of an input batch."""
        return (2, 3) if self.channel_axis == 1 else (1, 2)

    def spatial_size(self, x: np.ndarray | None = None) -> tuple[int, int]:
        """H and W of the input batch ``x`` (default: of the model's declared input row)."""
        shape = (None, *self.row_shape) if x is None else x.shape
        return tuple(shape[a] for a in self.spatial_axes)

    def forward(self, x: np.ndarray, tensors: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Run the model; returns its outputs, the default score tensor (the logits behind a
        trailing activation) and the inner ``tensors`` asked for."""
        x = self.check_input(x)
        names = tuple(sorted(set(tensors) | {self.score_name()}))
        session = self.cache.get(self.key, {"kind": "forward", "expose": names, "deployed": self.is_twin},
                                 lambda: expose(self.forward_graph, names), self.config)
        if not self.is_twin:
            return self._batched(session, x, {})
        out = self._batched(session, x.astype(self.spec.image_input.dtype, copy=False), {})
        return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in out.items()}

    @property
    def is_twin(self) -> bool:
        """Whether backward runs on a float32 twin of a half-precision deployed graph."""
        return self.forward_graph is not self.graph

    def twin_deviation(self, x: np.ndarray) -> np.ndarray | None:
        """Per row: the largest |float32 twin − deployed| over the model's outputs, relative to
        the row's largest |deployed output|; None unless this engine explains a twin."""
        if not self.is_twin:
            return None
        x = self.check_input(x)
        deployed = self.forward(x)
        twin = self._batched(self.cache.get(self.key, {"kind": "twin"}, lambda: self.graph, self.config), x, {})
        return np.max([relative_deviation(twin[o.name], deployed[o.name]) for o in self.spec.outputs], axis=0)

    def vjp(self, x: np.ndarray, seed: np.ndarray, *, wrt: Sequence[str] | None = None,
            rules: RuleSet | None = None, score: str = "logit", output: str | None = None,
            tensors: Sequence[str] = (), totals: Sequence[str] = ()) -> VjpResult:
        """Scores and the cotangents of ``seed · score`` w.r.t. ``wrt`` (default: the input);
        inner ``tensors`` come back from the same run in ``VjpResult.tensors``, and the per-row
        sums of the cotangents of ``totals`` tensors in ``VjpResult.totals``. ``seed``
        :data:`PREDICTED` seeds each row's top class of a class-score vector in the same run
        (``VjpResult.predicted``)."""
        x = self.check_input(x)
        output = output or self.output
        if has_symbolic_spatial(self.model):
            return self.for_input(x).vjp(x, seed, wrt=wrt, rules=rules, score=score, output=output,
                                         tensors=tensors, totals=totals)
        wrt = tuple(wrt) if wrt else (self.input_name,)
        rules = unclipped(rules) if self.ste == "identity" else rules
        totals = tuple(totals)
        for name in (*wrt, *tensors, *totals):
            self.require_tensor(name)
        exposed = tuple(sorted(set(tensors)))
        in_model_precision = self.precision == "model" and self.is_twin
        graph = self.forward_graph if in_model_precision else self.graph
        predicted = isinstance(seed, str) and seed == PREDICTED
        spec = {"kind": "vjp", "wrt": wrt, "rules": rules.key if rules else None, "score": score,
                "output": output, "expose": exposed, "totals": totals, "model_precision": in_model_precision,
                **({"seed": PREDICTED} if predicted else {})}

        def build():
            return gradient_model(graph, self.spec, output=output, score=score, wrt=wrt, rules=rules,
                                  exposed=exposed, totals=totals, predicted=predicted).vjp.model

        name = self.score_name(score, output)
        if predicted:
            self.one_hot(np.zeros(1, np.int64), score, output)  # one vector of class scores per row
        session = self.cache.get(self.key, spec, build, self._backward_config)
        feeds = {}
        if not predicted:
            seed = np.asarray(seed, dtype=np.float32)
            if seed.shape[0] != x.shape[0]:
                raise InputShapeError(f"seed has {seed.shape[0]} rows for {x.shape[0]} inputs")
            feeds = {seed_name(name): seed}
        if in_model_precision:  # feed the deployed types, return float32
            x = x.astype(self.spec.image_input.dtype, copy=False)
            feeds = {k: v.astype(session.input_types[k], copy=False) for k, v in feeds.items()}
        out = self._batched(session, x, feeds)
        if in_model_precision:
            out = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in out.items()}
        return VjpResult(out[name], {t: out[grad_name(t)] for t in wrt}, {t: out[t] for t in exposed},
                         {t: out[total_name(t)] for t in totals}, out.get(PREDICTED_OUTPUT))

    @property
    def _backward_config(self) -> SessionConfig:
        """The session options of backward graphs: on a quantized model, graph optimizations
        stop at the basic level. ONNX Runtime's extended level fuses QDQ pairs into integer
        kernels, and inside a backward graph (where forward tensors also feed backward nodes)
        the fused forward can compute other values than the deployed model does (the digits
        CNN in per-channel int8, Grad-CAM's graph: every row's top class wrong on an AVX2 CPU,
        ORT 1.31)."""
        if self.config.optimization in ("disable", "basic") or not self._quantized:
            return self.config
        return dataclasses.replace(self.config, optimization="basic")

    def saturated_quantizers(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Quantized tensor → per row of ``x``, the share of its values that its QuantizeLinear
        saturates (those pass no gradient under the clipped estimator)."""
        found = quantizers(self.forward_graph)
        if not found:
            return {}
        values = self.forward(x, [q.tensor for q in found])
        return {q.tensor: q.saturated(values[q.tensor]) for q in found}

    def layers(self) -> list[FeatureMap]:
        """Candidate layers for CAM-style methods, in data-flow order; on a model with a
        symbolic image size, with the shapes at the probe size."""
        if has_symbolic_spatial(self.model):
            return self._for_row_shape(self.probe_row_shape).layers()
        return layer_candidates(self.graph, self.spec.image_input.name, self.score_name(), self.spatial_size(),
                                self.model.fixed_batch)

    def require_tensor(self, name: str) -> None:
        """An error naming the candidates when ``name`` is not a tensor of the graph."""
        graph, names = self._named
        if graph is not self.graph:  # a subclass may swap the graph (dropout engines do)
            names = {self.input_name} | {vi.name for vi in self.graph.graph.value_info}
            self._named = (self.graph, names)
        if name in names:
            return
        listed = ", ".join(quote(c.name) for c in self.layers()[-5:])
        raise InputShapeError(f"the model has no tensor {quote(name)}; layer candidates include {listed} "
                              "(onnxlens inspect MODEL --layers lists them all)")

    def _batched(self, session: Session, x: np.ndarray, per_row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``x`` (and the per-row feeds) in chunks of ``batch_size`` rows; a model that
        takes exactly k rows gets its last chunk padded with copies of its last row, and the
        padded rows' results are dropped."""
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, x.shape[0], self.batch_size):
            stop = start + self.batch_size
            feeds = {self.input_name: x[start:stop], **{k: v[start:stop] for k, v in per_row.items()}}
            rows = len(feeds[self.input_name])
            if self._fixed_batch and rows < self._fixed_batch:
                feeds = {k: np.concatenate([v, np.repeat(v[-1:], self._fixed_batch - rows, axis=0)])
                         for k, v in feeds.items()}
            padded = self._fixed_batch is not None and rows < self._fixed_batch
            counter = _rows_run.get()
            if counter is not None:
                counter[0] += len(feeds[self.input_name])
            for name, value in session.run(feeds).items():  # a tensor without a batch axis (NMS's kept indices) stays
                batch_first = value.shape[:1] == (self._fixed_batch,)
                chunks.setdefault(name, []).append(value[:rows] if padded and batch_first else value)
        return {name: parts[0] if len(parts) == 1 else np.concatenate(parts) for name, parts in chunks.items()}
