"""ONNX Runtime sessions: device choice with fallback, threads, optimization level."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxlens.errors import DeviceUnavailableError, InputShapeError, RuntimeFailure, quote

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# ONNX Runtime's own log lines (coloured, with model-supplied node names) never reach the
# terminal: every failure reaches the user as one onnxlens error instead.
_SILENT = 4
ort.set_default_logger_severity(_SILENT)
_CUDA = "CUDAExecutionProvider"
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
_CPU = "CPUExecutionProvider"
#: Graphs with more nodes than this are compiled with graph optimizations off: on deep graphs
#: they take time super-linear in the node count (a 23,000-node backward chain: 84 s to create
#: a session, 1.9 s without them).
LARGE_GRAPH_NODES = 10_000


def gpu_present() -> bool:
    """True when an NVIDIA driver is visible; without one onnxruntime-gpu is not asked for
    CUDA, which would only print loader errors."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def cuda_available() -> bool:
    return _CUDA in ort.get_available_providers() and gpu_present()


_cuda_libraries_loaded = False


def _load_cuda_libraries() -> None:
    """Load CUDA and cuDNN from NVIDIA's pip packages (``onnxruntime-gpu[cuda,cudnn]``) when
    the system has none on its library path; ``preload_dlls`` prints what it cannot find,
    which the session's own error already says."""
    global _cuda_libraries_loaded
    if _cuda_libraries_loaded or not hasattr(ort, "preload_dlls"):
        return
    _cuda_libraries_loaded = True
    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
        ort.preload_dlls()


@dataclass(frozen=True)
class SessionConfig:
    """How to run: ``device`` (auto | cpu | cuda), intra-op ``threads`` (None = ORT's default),
    graph ``optimization`` (disable | basic | extended | all), ``tf32``: whether CUDA may
    run float32 convolutions and matrix products in TensorFloat-32 (10-bit mantissa; off, so
    that results on a GPU match float32 references), and ``memory_budget``: the bytes one
    session run may hold, which sizes its rows (None: a quarter of the available memory;
    :mod:`onnxlens.runtime.memory`)."""

    device: str = "auto"
    threads: int | None = None
    optimization: str = "all"
    tf32: bool = False
    memory_budget: int | None = None

    def __post_init__(self):
        if self.device not in DEVICES:
            raise RuntimeFailure(f"device must be one of {', '.join(DEVICES)}, got {quote(self.device)}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise RuntimeFailure(
                f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {quote(self.optimization)}"
            )
        if self.threads is not None and self.threads < 1:
            raise RuntimeFailure(f"threads must be at least 1, got {self.threads}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise RuntimeFailure(f"memory_budget must be a positive number of bytes, got {self.memory_budget}")


class Session:
    """An ONNX Runtime session and the provider it actually runs on."""

    def __init__(self, inner: ort.InferenceSession, fallback_reason: str | None = None):
        self._inner = inner
        self.provider = inner.get_providers()[0]
        self.device = "cuda" if self.provider == _CUDA else "cpu"
        #: why ``auto`` ended on the CPU although CUDA was asked for or listed, if it did
        self.fallback_reason = fallback_reason
        self.input_names = [i.name for i in inner.get_inputs()]
        #: input name → numpy dtype name it takes (e.g. "float16")
        self.input_types = {i.name: _NUMPY_TYPES.get(i.type, "float32") for i in inner.get_inputs()}
        self.output_names = [o.name for o in inner.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph; returns output name → array for ``outputs`` (default: all)."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputShapeError(f"missing model input(s): {', '.join(quote(n) for n in missing)}")
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self._inner.run(names, {k: feeds[k] for k in self.input_names})
        except Exception as exc:
            raise RuntimeFailure(f"ONNX Runtime failed to run the model: {_one_line(exc)}") from None
        return dict(zip(names, values))


def create_session(model: onnx.ModelProto | bytes, config: SessionConfig | None = None) -> Session:
    """Create a session on the configured device; ``auto`` means CUDA when a session really
    starts there, else CPU."""
    config = config or SessionConfig()
    if isinstance(model, bytes):
        data, nodes = model, len(onnx.ModelProto.FromString(model).graph.node)
    else:
        data, nodes = model.SerializeToString(), len(model.graph.node)
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.optimization]
    if nodes > LARGE_GRAPH_NODES:
        options.graph_optimization_level = OPTIMIZATION_LEVELS["disable"]
        options.enable_mem_reuse = False
    options.log_severity_level = _SILENT
    if config.threads is not None:
        options.intra_op_num_threads = config.threads
    fallback = None
    if config.device in ("auto", "cuda"):
        if cuda_available():
            _load_cuda_libraries()
            cuda = (_CUDA, {"use_tf32": str(int(config.tf32))})
            try:
                session = Session(ort.InferenceSession(data, options, providers=[cuda, _CPU]))
            except Exception as exc:
                session, fallback = None, f"CUDA session failed: {_one_line(exc)}"
            if session is not None and session.device == "cuda":
                return session
            fallback = fallback or "ONNX Runtime did not place the session on CUDA"
        else:
            fallback = "no CUDA-capable GPU or onnxruntime-gpu provider found"
        if config.device == "cuda":
            raise DeviceUnavailableError(f"device 'cuda' requested but unavailable: {fallback}")
        if _CUDA not in ort.get_available_providers():
            fallback = None  # a CPU-only install: nothing fell back
    # ORT's buffer-reuse planner is super-linear on deep graphs (a 4,700-node backward chain:
    # 3.4 s → 0.26 s to create without it) and buys nothing on the CPU, where freed buffers
    # return to the arena: ResNet-50 and ViT-B/16 gradients run as fast at the same peak memory
    options.enable_mem_reuse = False
    try:
        return Session(ort.InferenceSession(data, options, providers=[_CPU]), fallback)
    except Exception as exc:
        raise RuntimeFailure(f"ONNX Runtime cannot load the model: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
