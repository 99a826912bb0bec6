"""What each kind of model output is explained by — the target specs ``explain --target`` takes
for it (``onnxlens.methods.targets`` parses them) and its default target — for ``inspect``,
which describes a model without loading the methods."""

from __future__ import annotations

#: per number of axes of an output (batch first): its kind, the target specs it takes, its default
OUTPUT_KINDS = {
    2: ("class scores", "class=K (box=I where the model runs NonMaxSuppression)", "the predicted class"),
    3: ("sequence or detections", "sequence, step=T[,class=K]; box=I[,class=K][,objectness]",
        "sequence: the greedy-decoded path's log-likelihood"),
    4: ("dense map", "class=K with region=MASK, box=x0,y0,x1,y1, predicted",
        "the whole map, the class of the largest sum"),
}


def output_targets(shape) -> dict:
    """What an output of ``shape`` (batch first; None: unknown) is explained by: its kind, the
    target specs it takes beside ``output=NAME``, and the default target."""
    kind, specs, default = OUTPUT_KINDS.get(None if shape is None else len(shape), ("other", "none", "none"))
    return {"kind": kind, "specs": specs, "default": default}
