"""``onnxlens compare``: does a model's deployed form look where its reference looks?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from onnxlens.cli.common import (
    ImageOptions,
    floats,
    json_out,
    load_inputs,
    names,
    params_by_name,
    parse_params,
    progress_bar,
    safe,
    with_image_options,
)


@with_image_options
def compare(
    reference: Annotated[Path, typer.Argument(help="The reference model (.onnx), e.g. the float32 original.")],
    deployed: Annotated[Path, typer.Argument(help="Its deployed form (.onnx): int8, float16, …")],
    data: Annotated[Path, typer.Option("--data", help=".npy/.npz shaped for the models, an image, or a folder.")],
    methods: Annotated[str, typer.Option(help="Method name(s), comma-separated.")] = "gradient,gradcam,lrp",
    out: Annotated[Path, typer.Option(help="Results file (.json).")] = Path("compare.json"),
    overlays: Annotated[Optional[Path], typer.Option(help="Folder for side-by-side overlays of the most-changed inputs.")] = None,
    top: Annotated[int, typer.Option(help="How many of the most-changed inputs get overlays.")] = 6,
    threshold: Annotated[list[str], typer.Option(help="KEY=VALUE, e.g. min_top1_agreement=0.99, min_spearman=0.8 (repeatable).")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option(help="METHOD.key=value for a method (repeatable).")] = [],  # noqa: B006
    input_key: Annotated[Optional[str], typer.Option(help="Array name inside an .npz input.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Compare on the first N inputs only.")] = None,
    colormap: Annotated[str, typer.Option(help="Overlay colormap (matplotlib name).")] = "jet",
    *,
    images: ImageOptions,
) -> None:
    """Does the deployed form of a model look where the reference looks? Top-1 agreement, score
    deviation and, per method, the agreement of the two models' maps (most-changed inputs
    first); exits 1 when a --threshold fails."""
    from onnxlens.evaluation.deployment import THRESHOLDS, ComparisonError, check_pair, compare_deployment
    from onnxlens.evaluation.evaluate import route_params
    from onnxlens.files import write_json
    from onnxlens.methods.explainer import Explainer
    from onnxlens.methods.explanation import displayable
    from onnxlens.report.overlay import comparison_grid

    json_out(out)
    chosen = names(methods)
    given, _ = route_params(params_by_name(param), chosen, ())
    limits = {}
    for key, value in parse_params(threshold).items():
        if key not in THRESHOLDS:
            raise ComparisonError(f"unknown threshold {key!r}; known: {', '.join(THRESHOLDS)}")
        limits[key] = floats(value)[0]
    explainer, spec, prep = images.open(reference)
    other = Explainer(deployed, device=images.device, layout=spec.layout if images.layout else None)
    check_pair(explainer.engine, other.engine)  # before the progress bar: one line on a mismatch
    x = explainer.engine.check_input(load_inputs(data, input_key, spec, prep))[:limit]
    with progress_bar("{task.description}") as bar:
        task = bar.add_task("compare", total=len(chosen))

        def progress(label, done, total):
            bar.update(task, description=label, completed=done, total=total)

        result, maps = compare_deployment(explainer.engine, other.engine, x,
                                          {name: (name, given.get(name, {})) for name in chosen},
                                          thresholds=limits, progress=progress)
    result["reference"] = {"file": reference.name, "sha256": explainer.model.sha256,
                           "precision": explainer.model.precision}
    result["deployed"] = {"file": deployed.name, "sha256": other.model.sha256, "precision": other.model.precision,
                          "quantization": other.model.describe()["quantization"]}
    write_json(out, result)
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
        for rank, row in enumerate(result["per_input"][:top]):
            i = row["index"]
            grid = comparison_grid(displayable(x[i], spec.layout), [(ref[i], dep[i]) for ref, dep in maps.values()],
                                   colormap)
            grid.save(overlays / f"{rank:02d}_input{i}.png")
    table = Table(title=f"{len(x)} input(s) · top-1 agreement {result['top1_agreement']:.3f} · "
                        f"score deviation max {result['score_deviation']['max']:.3g}", title_justify="left")
    table.add_column("method")
    for measure in result["measures"]:
        table.add_column(f"{measure} (mean / worst)", justify="right")
    for name, entry in result["methods"].items():
        table.add_row(name, *(f"{entry[m]['mean']:.3f} / {entry[m]['worst']:.3f}" if entry[m]["mean"] is not None
                              else "–" for m in result["measures"]))
    Console(width=max(100, Console().width), highlight=False).print(table)
    for line in dict.fromkeys(result["warnings"]):
        typer.echo(f"onnxlens: warning: {safe(line)}", err=True)
    typer.echo(f"wrote {out}" + (f" and {min(top, len(x))} overlay(s) to {overlays}/" if overlays else ""))
    failed = [c for c in result["verdict"]["checks"] if not c["passed"]]
    for check in failed:
        value = "–" if check["value"] is None else f"{check['value']:.4g}"
        typer.echo(f"  FAIL: {check['threshold']}{' · ' + check['method'] if check['method'] else ''} = {value} "
                   f"(limit {check['limit']})")
    if failed:
        raise typer.Exit(1)
