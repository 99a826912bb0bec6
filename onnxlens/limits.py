"""Resource limits, checked before anything is allocated or run: a hostile or mistaken model,
image or parameter gets one line naming the limit and how to raise it, not an exhausted
machine. Each limit is read from its environment variable when set."""

from __future__ import annotations

import os
from dataclasses import dataclass

from onnxlens.errors import OnnxLensError


class ResourceLimitError(OnnxLensError):
    """A size or count beyond one of :data:`LIMITS`."""


@dataclass(frozen=True)
class Limit:
    env: str
    default: int
    what: str

    @property
    def value(self) -> int:
        raw = os.environ.get(self.env)
        if raw is None:
            return self.default
        try:
            return int(float(raw))
        except ValueError:
            raise ResourceLimitError(f"{self.env} must be a whole number, got {raw[:40]!r}") from None

    def check(self, count: int, subject: str) -> None:
        """Raise unless ``count`` ≤ the limit; ``subject`` says what was counted."""
        if count > self.value:
            unit = f" {self.what}" if self.what else ""
            raise ResourceLimitError(f"{subject} is {count:,}{unit}, above the limit of {self.value:,} "
                                     f"(set {self.env} to raise it)")


LIMITS = {
    #: one input tensor a model declares or is given (a 3×4096×4096 image is 50 M)
    "input_elements": Limit("ONNXLENS_MAX_INPUT_ELEMENTS", 1 << 27, "elements"),
    #: one inner tensor of a model run at its probe size (1 GiB of float32)
    "tensor_elements": Limit("ONNXLENS_MAX_TENSOR_ELEMENTS", 1 << 28, "elements"),
    #: nodes of a model's main graph (large detectors and ViTs have a few thousand; LRP on a
    #: 20,000-node chain takes half a minute, ONNX Runtime's session setup being super-linear)
    "graph_nodes": Limit("ONNXLENS_MAX_GRAPH_NODES", 20_000, "nodes"),
    #: the constant trip count of a Loop
    "loop_trips": Limit("ONNXLENS_MAX_LOOP_TRIPS", 100_000, "iterations"),
    #: pixels of an image file, checked from its header before decoding
    "image_pixels": Limit("ONNXLENS_MAX_IMAGE_PIXELS", 1 << 26, "pixels"),
    #: a method's or metric's count parameter (IG steps, SmoothGrad samples, RISE masks, …)
    "parameter_count": Limit("ONNXLENS_MAX_PARAMETER_COUNT", 100_000, ""),
}

#: Method and metric parameters that multiply the work; each is capped by ``parameter_count``.
COUNT_PARAMETERS = frozenset({"steps", "samples", "masks", "iterations", "runs", "n_segments", "cells",
                              "subset_size", "k", "max_layers", "max_steps"})


def check(name: str, count: int, subject: str) -> None:
    LIMITS[name].check(count, subject)
