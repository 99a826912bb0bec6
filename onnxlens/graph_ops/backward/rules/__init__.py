"""Default VJP rules, one module per op family; importing this package registers them all."""

from onnxlens.graph_ops.backward.rules import (  # noqa: F401
    activations,
    elementwise,
    linear,
    normalization,
    pooling,
    quantize,
    reduce,
    resize,
    shape,
)
