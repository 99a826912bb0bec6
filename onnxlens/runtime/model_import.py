"""Import a model end to end: load, validate, canonicalize, then run it to check that the
canonical form computes what the original does and to measure every tensor's real shape."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxlens import __version__
from onnxlens.errors import CanonicalizationError, OnnxLensError, RuntimeFailure, quote
from onnxlens.graph_ops.canonical import canonicalize, default_opset, validate_model
from onnxlens.graph_ops.backward import backward_coverage
from onnxlens.graph_ops.expose import expose
from onnxlens.graph_ops.fold_constants import fold_shape_computations
from onnxlens.graph_ops.load import LoadedModel, load_model
from onnxlens.graph_ops.model_spec import ModelSpec, model_spec
from onnxlens.graph_ops.simplify import score_tensor
from onnxlens.graph_ops.summary import summarize_graph
from onnxlens.runtime.session import SessionConfig, create_session

#: Spatial size used to run a model whose input height/width are symbolic.
PROBE_SPATIAL = 224
_PROBE_CONFIG = SessionConfig(device="cpu", optimization="basic")


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
            "backward": self.backward_support(),
        }

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
    model cannot be used.
    """
    loaded = load_model(source, max_bytes=max_bytes, base_dir=base_dir)
    label = quote(loaded.path.name) if loaded.path else "the model"
    validate_model(loaded.model, label)
    canonical = canonicalize(loaded.model)
    spec = model_spec(canonical.model, layout)
    model, shapes, fixes, verification = _verify_and_measure(loaded.model, canonical.model, spec)
    return ImportedModel(
        loaded=loaded,
        model=model,
        spec=model_spec(model, layout),
        original_opset=canonical.original_opset,
        canonical_notes=canonical.notes,
        shape_fixes=fixes,
        verification=verification,
        measured_shapes=shapes,
    )


def probe_feeds(model: onnx.ModelProto, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs to run a model once: seeded uniform [0, 1) floats, zeros for other types;
    symbolic dims become ``batch`` on axis 0 and :data:`PROBE_SPATIAL` elsewhere."""
    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else PROBE_SPATIAL)
                for i, d in enumerate(tt.shape.dim)]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = (rng.random(dims).astype(dtype) if np.issubdtype(dtype, np.floating)
                          else np.zeros(dims, dtype))
    return feeds


def _verify_and_measure(original, canonical, spec: ModelSpec):
    inner = [vi.name for vi in canonical.graph.value_info if vi.type.tensor_type.elem_type]
    probed = expose(canonical, inner)
    try:
        session = create_session(probed, _PROBE_CONFIG)
    except RuntimeFailure as exc:
        create_session(original, _PROBE_CONFIG)  # raises if the file itself does not load
        raise CanonicalizationError(f"ONNX Runtime loads the model but not its canonical form: {exc}") from None
    batch_dim = spec.image_input.shape[0]
    batch = batch_dim if isinstance(batch_dim, int) else 1
    feeds = probe_feeds(canonical, batch)
    runs = [session.run(feeds)]
    verification = _compare_with_original(original, canonical, feeds, runs[0])
    if not isinstance(batch_dim, int):
        runs.append(session.run(probe_feeds(canonical, 2)))
    batch_name = batch_dim if isinstance(batch_dim, str) else "N"
    shapes = {}
    for name, value in runs[0].items():
        dims = list(value.shape)
        if len(runs) > 1:
            dims = [batch_name if d != d2 else d for d, d2 in zip(value.shape, runs[1][name].shape)]
        shapes[name] = tuple(dims)
    if any(isinstance(d, str) for d in spec.image_input.spatial):
        return canonical, shapes, (), verification + "; spatial size is symbolic, shapes not recorded"
    model, fixes = record_shapes(canonical, shapes)
    model, folded = fold_shape_computations(model)
    if folded:
        _compare_with_original(original, model, feeds, create_session(model, _PROBE_CONFIG).run(feeds))
        verification += f"; {folded} shape computation node(s) folded into constants"
    return model, shapes, fixes, verification


def _compare_with_original(original, canonical, feeds, canonical_out) -> str:
    if original.SerializeToString() == canonical.SerializeToString():
        return "canonical form identical to the file"
    try:
        reference = create_session(original, _PROBE_CONFIG).run(feeds)
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
