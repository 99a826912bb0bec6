"""Read an ONNX model from a path or bytes, safely: size cap, external data confined to the
model's folder, and one typed error per kind of bad file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from onnxlens.errors import (
    EmptyGraphError,
    InvalidModelError,
    MissingExternalDataError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTooLargeError,
    NotOnnxError,
    TruncatedModelError,
    UnsafeExternalDataError,
    quote,
)
from onnxlens.graph_ops.tensors import stored_tensors

#: Default cap on model size (file plus external data), in bytes; ``ONNXLENS_MAX_MODEL_BYTES``
#: overrides it.
DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class LoadedModel:
    """An ONNX model read into memory, with where it came from and its fingerprint."""

    model: onnx.ModelProto
    sha256: str  #: of the model bytes, followed by each external-data file in name order
    size_bytes: int  #: model bytes plus external data
    path: Path | None = None
    external_data: tuple[str, ...] = field(default=())


def max_model_bytes(explicit: int | None = None) -> int:
    """The size cap in force: the argument, else ``ONNXLENS_MAX_MODEL_BYTES``, else the default."""
    if explicit is not None:
        return int(explicit)
    env = os.environ.get("ONNXLENS_MAX_MODEL_BYTES")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ModelLoadError(f"ONNXLENS_MAX_MODEL_BYTES must be an integer, got {quote(env)}") from None
    return DEFAULT_MAX_MODEL_BYTES


def load_model(
    source: str | os.PathLike | bytes,
    *,
    max_bytes: int | None = None,
    base_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a model from a file path or from its serialized bytes.

    External-data files are read only from the model's folder (``base_dir`` for bytes); a
    location that is absolute or leaves that folder is refused.
    """
    cap = max_model_bytes(max_bytes)
    path = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "model bytes"
    else:
        path = Path(source)
        label = quote(path.name)
        if not path.exists():
            raise ModelNotFoundError(f"model file {quote(str(path))} does not exist")
        if not path.is_file():
            raise ModelNotFoundError(f"model path {quote(str(path))} is not a file")
        size = path.stat().st_size
        if size > cap:
            raise ModelTooLargeError(f"model {label} is {size} bytes, over the cap of {cap} bytes")
        data = path.read_bytes()
        base_dir = path.parent if base_dir is None else base_dir
    if len(data) > cap:
        raise ModelTooLargeError(f"{label} is {len(data)} bytes, over the cap of {cap} bytes")

    model = _parse(data, label)
    if len(model.graph.node) == 0:
        raise EmptyGraphError(f"{label} has an empty graph (no nodes)")

    digest = hashlib.sha256(data)
    files = _external_data_files(model, base_dir, label)
    total = len(data)
    for f in files:
        total += f.stat().st_size
        if total > cap:
            raise ModelTooLargeError(f"{label} with its external data exceeds the cap of {cap} bytes")
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    if files:
        try:
            external_data_helper.load_external_data_for_model(model, str(base_dir))
        except Exception as exc:  # onnx raises several types for bad offsets/lengths
            raise ModelLoadError(f"{label}: cannot read its external data ({exc})") from None
        left = next((t for t in stored_tensors(model) if external_data_helper.uses_external_data(t)), None)
        if left is not None:  # never handed on: ONNX Runtime would read it relative to the working directory
            raise UnsafeExternalDataError(f"{label}: the external data of tensor {quote(left.name)} "
                                          "(a sparse tensor's) is not supported")
    return LoadedModel(
        model=model,
        sha256=digest.hexdigest(),
        size_bytes=total,
        path=path,
        external_data=tuple(f.name for f in files),
    )


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        if _looks_like_onnx_header(data):
            raise TruncatedModelError(f"{label} is truncated or corrupt: its ONNX message ends early") from None
        raise NotOnnxError(f"{label} is not an ONNX model (the bytes are not an ONNX protobuf)") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise NotOnnxError(f"{label} is not an ONNX model (no IR version, graph or opset)")
    field = _undecodable_text(model, "model")
    if field:
        raise InvalidModelError(f"{label}: the text of {field} is not valid UTF-8")
    return model


def _undecodable_text(message, path: str) -> str | None:
    """The path of the first string field that did not decode as UTF-8 (protobuf then hands
    back bytes), or None."""
    for descriptor, value in message.ListFields():
        repeated = (descriptor.is_repeated if hasattr(descriptor, "is_repeated")
                    else descriptor.label == descriptor.LABEL_REPEATED)
        if descriptor.type == descriptor.TYPE_STRING:
            if any(isinstance(v, bytes) for v in (value if repeated else [value])):
                return f"{path}.{descriptor.name}"
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            for i, item in enumerate(value if repeated else [value]):
                found = _undecodable_text(item, f"{path}.{descriptor.name}[{i}]" if repeated else f"{path}.{descriptor.name}")
                if found:
                    return found
    return None


def _looks_like_onnx_header(data: bytes) -> bool:
    """ONNX files begin with field 1 (ir_version, a small varint): bytes 0x08, 1..32."""
    return len(data) >= 2 and data[0] == 0x08 and 1 <= data[1] <= 32


def _external_data_files(model: onnx.ModelProto, base_dir, label: str) -> list[Path]:
    """The files every stored tensor's external data comes from — initializers, sparse
    tensors, Constant values in subgraphs and model-local functions alike — each checked: a
    relative path to a regular file inside the model's folder (symlinks resolved), its
    offset and length within the file."""
    references: dict[str, list[tuple[str, dict]]] = {}
    for tensor in stored_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            if "location" not in info:
                raise UnsafeExternalDataError(f"{label}: tensor {quote(tensor.name)} has external data without a location")
            references.setdefault(info["location"], []).append((tensor.name, info))
    if not references:
        return []
    if base_dir is None:
        raise MissingExternalDataError(
            f"{label} keeps weights in external data files; load it from its path or pass base_dir"
        )
    root = Path(base_dir).resolve()
    files = []
    for location in sorted(references):
        if not location or "\x00" in location or os.path.isabs(location) or Path(location).is_absolute():
            raise UnsafeExternalDataError(f"{label}: external data location {quote(location)} is not a relative path")
        target = (root / location).resolve()
        if target != root and root not in target.parents:
            raise UnsafeExternalDataError(
                f"{label}: external data location {quote(location)} leaves the model's folder; refused"
            )
        if not target.is_file():
            raise MissingExternalDataError(f"{label}: external data file {quote(location)} is missing")
        size = target.stat().st_size
        for name, info in references[location]:
            try:
                offset, length = int(info.get("offset", 0)), int(info.get("length", size))
            except ValueError:
                raise UnsafeExternalDataError(f"{label}: tensor {quote(name)} has a non-numeric external data "
                                              "offset or length") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise UnsafeExternalDataError(
                    f"{label}: tensor {quote(name)} reads bytes {offset}..{offset + length} of {quote(location)}, "
                    f"which has {size}")
        files.append(target)
    return files
