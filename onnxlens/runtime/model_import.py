"""Import a model end to end: load, validate, canonicalize, then run it to check that the
canonical form computes what the original does and to measure every tensor's real shape."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import helper

from onnxlens import __version__
from onnxlens.errors import CanonicalizationError, InvalidModelError, OnnxLensError, RuntimeFailure, quote
from onnxlens.graph_ops.canonical import canonicalize, default_opset, validate_model
from onnxlens.graph_ops.index import in_topological_order
from onnxlens.graph_ops.backward import backward_coverage
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.fold_constants import fold_shape_computations
from onnxlens.graph_ops.load import LoadedModel, load_model
from onnxlens.graph_ops.model_spec import ModelSpec, model_spec
from onnxlens.graph_ops.precision import float32_twin, half_precision
from onnxlens.graph_ops.simplify import score_tensor
from onnxlens.graph_ops.summary import summarize_graph
from onnxlens.limits import check as check_limit
from onnxlens.runtime import import_cache
from onnxlens.runtime.session import SessionConfig, create_session

#: Image sizes (height, width) a model with a symbolic image size is run at when imported, the
#: first it accepts: classifiers (224²), text-line recognizers (48×320, as PP-OCR), detectors (640²).
PROBE_SIZES = ((224, 224), (48, 320), (640, 640))
_PROBE_CONFIG = SessionConfig(device="cpu", optimization="basic")
_DEPLOYED_CONFIG = SessionConfig(device="cpu")


@dataclass(frozen=True)
class ImportedModel:
    """A model ready for onnxlens: the file as loaded, its canonical form, and its spec."""

    loaded: LoadedModel
    model: onnx.ModelProto  #: canonical form, with measured shapes in value_info
    spec: ModelSpec
    original_opset: int
    canonical_notes: tuple[str, ...] = ()
    #: tensors whose ONNX-inferred shape disagreed with the shape measured by running
    shape_fixes: tuple[str, ...] = ()
    verification: str = ""
    measured_shapes: dict[str, tuple] = field(default_factory=dict, repr=False)
    #: the only batch size the graph runs at when its input declares a symbolic batch that it
    #: does not honour (a batch baked into Reshape constants), else None
    fixed_batch: int | None = None
    batch_note: str = ""  #: which batch sizes the graph accepts, and why
    #: a half-precision model as deployed (canonical, shapes measured): ``model`` is then its
    #: float32 twin, which gradients and relevance run on; forward passes run this one
    deployed: onnx.ModelProto | None = field(default=None, repr=False)
    precision: str = "float32"  #: the deployed model's compute precision
    #: largest |twin − deployed| over the outputs on the probe input, relative to the largest |output|
    twin_deviation: float | None = None
    probe_size: tuple[int, int] = PROBE_SIZES[0]  #: (height, width) given to symbolic image dims when probing

    @property
    def original(self) -> onnx.ModelProto:
        return self.loaded.model

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    def describe(self) -> dict:
        """A JSON-ready description (``onnxlens inspect --json``); model strings are data."""
        m = self.original
        summary = summarize_graph(m)
        return {
            "schema": "onnxlens.inspect/1",
            "onnxlens_version": __version__,
            "file": self.loaded.path.name if self.loaded.path else None,
            "size_bytes": self.loaded.size_bytes,
            "sha256": self.sha256,
            "external_data": list(self.loaded.external_data),
            "producer": {"name": m.producer_name, "version": m.producer_version},
            "ir_version": m.ir_version,
            "opsets": {(e.domain or "ai.onnx"): e.version for e in m.opset_import},
            "canonical_opset": default_opset(self.model),
            "domain": m.domain,
            "model_version": m.model_version,
            "doc_string": m.doc_string,
            "metadata": {p.key: p.value for p in m.metadata_props},
            **self.spec.to_dict(),
            **summary.to_dict(),
            "canonicalization": list(self.canonical_notes),
            "shape_fixes": list(self.shape_fixes),
            "verification": self.verification,
            "batch": {"accepted": self.accepted_batch(), "note": self.batch_note},
            "precision": {"deployed": self.precision, "explained": "float32",
                          "twin_deviation": self.twin_deviation},
            "backward": self.backward_support(),
        }

    @property
    def batch_rows(self) -> int | None:
        """The number of rows every session run must feed (None: any)."""
        declared = self.spec.image_input.shape[0]
        return declared if isinstance(declared, int) else self.fixed_batch

    def accepted_batch(self) -> str:
        return "any" if self.batch_rows is None else str(self.batch_rows)

    def backward_support(self) -> dict:
        """Whether the default score of the first output differentiates w.r.t. the image
        input, and which op types (with their nodes) lack a backward rule."""
        score = score_tensor(self.spec)
        try:
            missing = backward_coverage(self.model, [score], [self.spec.image_input.name])
        except OnnxLensError as exc:
            return {"supported": False, "missing": {}, "reason": str(exc)}
        return {"supported": not missing, "missing": missing, "reason": ""}


def import_model(
    source: str | os.PathLike | bytes,
    *,
    layout: str | None = None,
    max_bytes: int | None = None,
    base_dir: str | os.PathLike | None = None,
) -> ImportedModel:
    """Load, validate and canonicalize a model, then check the canonical form by running it.

    Raises a subclass of :class:`~onnxlens.errors.OnnxLensError` naming the problem when the
    model cannot be used. A file imported before (same bytes, layout and versions) comes from
    the disk cache (:mod:`onnxlens.runtime.import_cache`).
    """
    loaded = load_model(source, max_bytes=max_bytes, base_dir=base_dir)
    cached = import_cache.load_entry(loaded.sha256, layout)
    if cached is not None:  # imported by an earlier process: the same file, layout and versions
        spec = model_spec(cached["deployed"] or cached["model"], layout)
        return ImportedModel(loaded=loaded, spec=spec, **cached)
    imported = _imported(loaded, layout)
    import_cache.store_entry(loaded.sha256, layout, imported)
    return imported


def _imported(loaded: LoadedModel, layout: str | None) -> ImportedModel:
    label = quote(loaded.path.name) if loaded.path else "the model"
    model, reordered = in_topological_order(loaded.model)
    validate_model(model, label)
    canonical = canonicalize(model, probe_ranks=_probe_ranks)
    if reordered:
        canonical = replace(canonical, notes=("sorted the nodes into topological order",) + canonical.notes)
    # ONNX Runtime fuses a QDQ form back into its integer kernels only at full optimization:
    # a rewritten QOperator graph is compared with the file there, as the deployed model runs.
    compare = _DEPLOYED_CONFIG if canonical.qoperator_rewritten else _PROBE_CONFIG
    try:
        measured = _verify_and_measure(loaded.model, canonical.model, model_spec(canonical.model, layout), compare)
    except CanonicalizationError as exc:
        if not canonical.qoperator_rewritten:
            raise
        kept = canonicalize(model, rewrite_qoperator=False, probe_ranks=_probe_ranks)
        canonical = replace(kept, notes=kept.notes + (f"QOperator nodes kept as they are: {exc}",))
        measured = _verify_and_measure(loaded.model, canonical.model, model_spec(canonical.model, layout))
    imported = ImportedModel(
        loaded=loaded,
        model=measured.model,
        spec=model_spec(measured.model, layout),
        original_opset=canonical.original_opset,
        canonical_notes=canonical.notes,
        shape_fixes=measured.fixes,
        verification=measured.verification,
        measured_shapes=measured.shapes,
        fixed_batch=measured.fixed_batch,
        batch_note=measured.batch_note,
        probe_size=measured.probe_size,
    )
    precision = half_precision(imported.model)
    return with_float32_twin(imported, precision) if precision else imported


def with_float32_twin(imported: ImportedModel, precision: str) -> ImportedModel:
    """A half-precision model with its float32 twin as the model to explain, and how far the
    twin's outputs lie from the deployed model's on the probe input."""
    twin = float32_twin(imported.model)
    feeds = probe_feeds(imported.model, imported.batch_rows or 1, imported.probe_size)
    deployed = create_session(imported.model, _DEPLOYED_CONFIG).run(feeds)
    raised = create_session(twin, _DEPLOYED_CONFIG).run({k: v.astype(np.float32) if v.dtype.kind == "f" else v
                                                          for k, v in feeds.items()})
    deviation = float(max(relative_deviation(raised[name], value).max(initial=0.0) for name, value in deployed.items()))
    return replace(imported, model=twin, deployed=imported.model, precision=precision, twin_deviation=deviation,
                   verification=imported.verification + f"; float32 twin within {deviation:.2g} (relative) of the "
                   f"deployed {precision} outputs")


def relative_deviation(twin: np.ndarray, deployed: np.ndarray) -> np.ndarray:
    """Per row (axis 0): the largest |twin − deployed|, relative to the row's largest |deployed|."""
    rows = len(deployed)
    gap = np.abs(twin.astype(np.float64) - deployed.astype(np.float64)).reshape(rows, -1).max(axis=1, initial=0.0)
    return gap / np.maximum(np.abs(deployed.astype(np.float64)).reshape(rows, -1).max(axis=1, initial=0.0), 1e-12)


def _probe_ranks(model: onnx.ModelProto, tensors) -> dict[str, int]:
    """The ranks of ``tensors`` measured by running the model once on a probe input ({} when
    it does not run: the upgrade then names the tensor whose rank it needed)."""
    try:
        out, _ = _run_at_probe_size(create_session(expose(model, tensors), _PROBE_CONFIG), model, 1)
    except OnnxLensError:
        return {}
    return {name: out[name].ndim for name in tensors}


def has_symbolic_spatial(imported: ImportedModel) -> bool:
    """Whether the image input's non-batch axes are symbolic (a dynamic image size)."""
    return any(not isinstance(d, int) for d in imported.spec.image_input.shape[1:])


def specialize(imported: ImportedModel, row_shape: tuple[int, ...]) -> ImportedModel:
    """The model with its image input's non-batch axes fixed to ``row_shape`` (one input
    row's shape), every tensor's shape measured at that size and shape arithmetic folded:
    what the backward compiler and layer search need on a graph with a dynamic image size.
    A half-precision deployed graph is specialized alongside its float32 twin."""
    layout = imported.spec.image_input.layout
    measured = _specialized(imported.model, imported.spec.image_input.name, row_shape, layout)
    deployed = imported.deployed and _specialized(imported.deployed, imported.spec.image_input.name, row_shape,
                                                  layout).model
    size = "×".join(map(str, row_shape))
    return replace(imported, model=measured.model, spec=model_spec(measured.model, layout), deployed=deployed,
                   shape_fixes=measured.fixes, verification=f"specialized to rows of {size}: {measured.verification}",
                   measured_shapes=measured.shapes, fixed_batch=measured.fixed_batch, batch_note=measured.batch_note,
                   probe_size=measured.probe_size)


def _specialized(source: onnx.ModelProto, image: str, row_shape: tuple[int, ...], layout: str):
    model = onnx.ModelProto()
    model.CopyFrom(source)
    vi = next(v for v in model.graph.input if v.name == image)
    for dim, size in zip(vi.type.tensor_type.shape.dim[1:], row_shape):
        dim.Clear()
        dim.dim_value = int(size)
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # advisory, as at import: shapes are measured by running
        pass
    return _verify_and_measure(source, model, model_spec(model, layout))


def probe_feeds(model: onnx.ModelProto, batch: int, size: tuple[int, int] = PROBE_SIZES[0],
                seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs to run a model once: seeded uniform [0, 1) floats, zeros for other types;
    symbolic dims become ``batch`` on axis 0, the last symbolic one the width ``size[1]`` and
    any other the height ``size[0]``."""
    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        tt = vi.type.tensor_type
        symbolic = [i for i, d in enumerate(tt.shape.dim) if i > 0 and not d.HasField("dim_value")]
        dims = [d.dim_value if d.HasField("dim_value") else
                batch if i == 0 else size[1] if i == symbolic[-1] else size[0] for i, d in enumerate(tt.shape.dim)]
        if any(d < 0 for d in dims):
            raise InvalidModelError(f"input {quote(vi.name)} declares a negative dimension {dims}")
        # a zero dimension empties the array but not the claim: numpy refuses the other dims' product
        check_limit("input_elements", int(np.prod([max(d, 1) for d in dims], dtype=object)),
                    f"input {quote(vi.name)} {dims} at the probe size (zero dimensions counted as 1)")
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = (rng.random(dims).astype(dtype) if np.issubdtype(dtype, np.floating)
                          else np.zeros(dims, dtype))
    _check_tensor_sizes(model, feeds)
    return feeds


def _check_tensor_sizes(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Refuse, before running it, a model whose inner tensors at these input shapes would be
    larger than the ``tensor_elements`` limit (by ONNX shape inference; tensors it cannot
    size are left to the run)."""
    fixed = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions)
    fixed.graph.node.extend(model.graph.node)
    fixed.graph.input.extend(model.graph.input)
    fixed.graph.output.extend(model.graph.output)
    for t in model.graph.initializer:  # weights by shape only: inference reads their dims, not their bytes
        if t.data_type == onnx.TensorProto.INT64 or len(t.raw_data) <= 1024:
            fixed.graph.initializer.append(t)
        else:
            fixed.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    for vi in fixed.graph.input:
        if vi.name in feeds:
            vi.type.tensor_type.shape.Clear()
            for d in feeds[vi.name].shape:
                vi.type.tensor_type.shape.dim.add().dim_value = int(d)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # noqa: BLE001 — shape inference gives up on some graphs; the run decides then
        return
    for vi in (*inferred.graph.value_info, *inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            check_limit("tensor_elements", int(np.prod([d.dim_value for d in dims], dtype=object)),
                        f"tensor {quote(vi.name)} {[d.dim_value for d in dims]} at the probe size")


@dataclass(frozen=True)
class _Measured:
    model: onnx.ModelProto
    shapes: dict[str, tuple]
    fixes: tuple[str, ...]
    verification: str
    fixed_batch: int | None
    batch_note: str
    probe_size: tuple[int, int]


def _run_at_probe_size(session, model: onnx.ModelProto, batch: int):
    """(outputs, size): the session run on probe feeds at the first of :data:`PROBE_SIZES` the
    model accepts (only the first where no input has a symbolic non-batch dim)."""
    symbolic = any(not d.HasField("dim_value") for vi in model.graph.input for d in vi.type.tensor_type.shape.dim[1:])
    sizes = PROBE_SIZES if symbolic else PROBE_SIZES[:1]
    for size in sizes:
        try:
            return session.run(probe_feeds(model, batch, size)), size
        except RuntimeFailure:
            if size == sizes[-1]:
                raise
    raise AssertionError("unreachable")


def _verify_and_measure(original, canonical, spec: ModelSpec, compare: SessionConfig = _PROBE_CONFIG) -> _Measured:
    """Run the canonical form on probe inputs: check it against the file's outputs (both run
    under ``compare``) and measure every tensor's shape."""
    inner = [vi.name for vi in canonical.graph.value_info if vi.type.tensor_type.elem_type]
    probed = expose(canonical, inner)
    try:
        session = create_session(probed, _PROBE_CONFIG)
    except RuntimeFailure as exc:
        create_session(original, _PROBE_CONFIG)  # raises if the file itself does not load
        raise CanonicalizationError(f"ONNX Runtime loads the model but not its canonical form: {exc}") from None
    batch_dim = spec.image_input.shape[0]
    batch = batch_dim if isinstance(batch_dim, int) else 1
    first, size = _run_at_probe_size(session, canonical, batch)
    feeds, runs = probe_feeds(canonical, batch, size), [first]
    canonical_out = runs[0] if compare == _PROBE_CONFIG else create_session(canonical, compare).run(feeds)
    verification = _compare_with_original(original, canonical, feeds, canonical_out, compare)
    fixed_batch, batch_note = None, "the input declares batch size " + str(batch_dim)
    if not isinstance(batch_dim, int):
        try:
            runs.append(session.run(probe_feeds(canonical, 2, size)))
            batch_note = "the graph runs at batch sizes 1 and 2"
        except RuntimeFailure as exc:
            fixed_batch = 1
            batch_note = (f"the input declares a symbolic batch, but the graph fails at batch 2, so rows are "
                          f"fed one at a time: {exc}")
    batch_name = batch_dim if isinstance(batch_dim, str) else "N"
    shapes = {name: _batch_dims(value.shape, runs[1][name].shape if len(runs) > 1 else None, batch_name)
              for name, value in runs[0].items()}
    if any(isinstance(d, str) for d in spec.image_input.spatial):
        return _Measured(canonical, shapes, (), verification + "; image size is symbolic: shapes are measured "
                         "per input size when a method needs them", fixed_batch, batch_note, size)
    model, fixes = record_shapes(canonical, shapes)
    model, folded = fold_shape_computations(model)
    if folded:
        _compare_with_original(original, model, feeds, create_session(model, compare).run(feeds), compare)
        verification += f"; {folded} shape computation node(s) folded into constants"
    return _Measured(model, shapes, fixes, verification, fixed_batch, batch_note, size)


def _batch_dims(at_1: tuple, at_2: tuple | None, batch_name: str) -> tuple:
    """A tensor's shape from runs at batch 1 and 2: a dim that doubles is the batch (``N``) or
    a multiple of it (``256*N``: a patch unfold folds patches into the batch axis)."""
    if at_2 is None:
        return tuple(at_1)
    dims = []
    for d1, d2 in zip(at_1, at_2):
        if d1 == d2:
            dims.append(d1)
        elif d2 == 2 * d1:
            dims.append(batch_name if d1 == 1 else f"{d1}*{batch_name}")
        else:
            dims.append(f"{batch_name}?{d1}")
    return tuple(dims)


def _compare_with_original(original, canonical, feeds, canonical_out, config: SessionConfig) -> str:
    if original == canonical:  # field by field, without serializing the weights
        return "canonical form identical to the file"
    try:
        reference = create_session(original, config).run(feeds)
    except OnnxLensError as exc:
        return f"original not runnable in ONNX Runtime ({exc}); canonical form runs"
    for name, ref in reference.items():
        got = canonical_out.get(name)
        scale = float(np.max(np.abs(ref))) if ref.size and np.issubdtype(ref.dtype, np.floating) else 1.0
        if got is None or got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
            raise CanonicalizationError(
                f"the canonical form of the model computes a different output {quote(name)} than the original"
            )
    return "canonical form matches the original's outputs on a probe input"


def record_shapes(model: onnx.ModelProto, shapes: dict[str, tuple]) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Write measured shapes into a copy's value_info and outputs; returns it and the list of
    tensors whose inferred shape disagreed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fixes = []
    graph = out.graph
    for vi in (*graph.value_info, *graph.output):
        if vi.name not in shapes:
            continue
        measured = shapes[vi.name]
        shape = vi.type.tensor_type.shape
        inferred = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        if shape.dim and (len(inferred) != len(measured) or any(
            i is not None and i != m for i, m in zip(inferred, measured) if not isinstance(m, str)
        )):
            fixes.append(f"{vi.name}: inferred {tuple(inferred)}, measured {measured}")
        shape.Clear()
        for d in measured:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    return out, tuple(fixes)
