"""``onnxlens explain``: one method's explanation of an input array, an image or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from onnxlens.cli.common import ImageOptions, ModelArgument, load_inputs, parse_params, safe, with_image_options
from onnxlens.errors import OnnxLensError


@with_image_options
def explain(
    model: ModelArgument,
    input: Annotated[Path, typer.Option("--input", help=".npy shaped for the model, an image, or a folder of images.")],
    method: Annotated[str, typer.Option(help="Method name, e.g. gradient, integrated_gradients.")] = "gradient",
    out: Annotated[Path, typer.Option(help="Output: .npz (arrays) or .png (overlay); a folder for a folder input.")] = Path("explanation.png"),
    target: Annotated[Optional[str], typer.Option(
        help="Class to explain (default: the predicted class), or a spec: class=K, output=NAME, and on dense "
             "maps region=MASK, box=x0,y0,x1,y1, predicted; on sequences step=T, sequence; on detections box=I "
             "or match=x0,y0,x1,y1, objectness (see the README).")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Tensor name for layer methods.")] = None,
    param: Annotated[list[str], typer.Option(help="Method parameter key=value (repeatable).")] = [],  # noqa: B006
    colormap: Annotated[str, typer.Option(help="Matplotlib colormap of .png overlays.")] = "jet",
    fmt: Annotated[str, typer.Option("--format", help="Per-image output for a folder input: png or npz.")] = "png",
    *,
    images: ImageOptions,
) -> None:
    """Explain a model's prediction for an input array, an image or a folder of images."""
    import numpy as np
    from rich.progress import track

    from onnxlens.methods.explanation import displayable
    from onnxlens.methods.registry import coerce_params, method_info
    from onnxlens.methods.targets import Target
    from onnxlens.pipelines.images import list_images, load_image
    from onnxlens.report.overlay import save_overlay

    params = parse_params(param)
    if layer is not None:
        params["layer"] = layer
    coerce_params(method_info(method), params)  # fail on a bad name before the model loads
    target = None if target is None else Target.parse(target)
    if not input.is_dir() and out.suffix not in (".npz", ".png"):
        raise OnnxLensError(f"--out must end in .npz or .png, got {str(out)!r}")
    explainer, spec, prep = images.open(model)

    def write(path: Path, row: np.ndarray, explanation) -> None:
        if path.suffix == ".npz":
            explanation.save_npz(path)
        elif path.suffix == ".png":
            save_overlay(path, displayable(row, spec.layout), explanation.heatmap[0], colormap)
        else:
            raise OnnxLensError(f"--out must end in .npz or .png, got {str(path)!r}")

    if input.is_dir():
        files = list_images(input)
        if not files:
            raise OnnxLensError(f"no images found in {str(input)!r}")
        if fmt not in ("png", "npz"):
            raise OnnxLensError(f"--format must be png or npz, got {fmt!r}")
        out.mkdir(parents=True, exist_ok=True)
        failed = []
        for path in track(files, description=f"{method}", console=Console(stderr=True), transient=True):
            try:
                row = load_image(path, spec, prep)
                write(out / f"{path.relative_to(input).with_suffix('').as_posix().replace('/', '__')}.{fmt}",
                      row, explainer.explain(row[None], method, target, **params))
            except OnnxLensError as exc:
                failed.append(f"{path.name}: {exc}")
        typer.echo(f"wrote {len(files) - len(failed)} explanation(s) to {out}")
        if failed:
            raise OnnxLensError(f"{len(failed)} of {len(files)} image(s) failed; first: {failed[0]}")
        return
    batch = explainer.engine.check_input(load_inputs(input, None, spec, prep))
    if len(batch) > 1 and out.suffix == ".png":
        raise OnnxLensError("a .png overlay shows one input; use .npz for a batch")
    explanation = explainer.explain(batch, method, target, **params)
    for line in explanation.warnings:
        typer.echo(f"onnxlens: warning: {safe(line)}", err=True)
    write(out, batch[0], explanation)
    head = "".join(f"{key} {safe(explanation.params[key])} " for key in ("output", "target") if key in explanation.params)
    typer.echo(f"{method}: {head}class {explanation.target.tolist()} score {np.round(explanation.score, 4).tolist()} → {out}")
