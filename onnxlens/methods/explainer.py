"""``Explainer``: the Python entry point — one model, any method, compiled graphs cached."""

from __future__ import annotations

import os

import numpy as np

from onnxlens.methods.explanation import Explanation
from onnxlens.methods.registry import run_method
from onnxlens.runtime.engine import Engine
from onnxlens.runtime.memory import parse_size
from onnxlens.runtime.model_import import ImportedModel, import_model
from onnxlens.runtime.session import SessionConfig


class Explainer:
    """Explain a model's predictions::

        explainer = Explainer("models/digits_cnn.onnx")
        e = explainer.explain(x, method="integrated_gradients", steps=32)

    ``x`` is one input (without batch axis) or a batch, shaped and laid out as the model takes it.
    ``tf32=True`` lets CUDA trade float32 accuracy for speed (see :class:`SessionConfig`);
    ``memory_budget`` (bytes, or a size such as ``"2G"``; default a quarter of the available
    memory) caps what one session run may hold, and so the rows of every run — the copies of
    Integrated Gradients' steps, SmoothGrad's samples or occlusion's windows included.
    """

    def __init__(self, model: str | os.PathLike | bytes | ImportedModel, device: str = "auto",
                 threads: int | None = None, layout: str | None = None, batch_size: int | None = None,
                 tf32: bool = False, memory_budget: int | str | None = None):
        self.model = model if isinstance(model, ImportedModel) else import_model(model, layout=layout)
        budget = None if memory_budget is None else parse_size(memory_budget)
        config = SessionConfig(device=device, threads=threads, tf32=tf32, memory_budget=budget)
        self.engine = Engine(self.model, config, batch_size=batch_size)

    def explain(self, x: np.ndarray, method: str = "gradient", target=None, **params) -> Explanation:
        return run_method(method, self.engine, x, target, **params)
