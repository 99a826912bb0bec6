"""``onnxlens evaluate``: explanations by one or more methods, scored into a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from onnxlens.cli.common import (
    ImageOptions,
    ModelArgument,
    json_out,
    load_array,
    load_inputs,
    names,
    params_by_name,
    progress_bar,
    safe,
    with_image_options,
)
from onnxlens.errors import OnnxLensError


@with_image_options
def evaluate(
    model: ModelArgument,
    input: Annotated[Path, typer.Option("--input", help=".npy/.npz shaped for the model, an image, or a folder.")],
    method: Annotated[str, typer.Option(help="Method name(s), comma-separated.")] = "gradient",
    metric: Annotated[Optional[str], typer.Option(help="Metric name(s), comma-separated (default: all that apply).")] = None,
    out: Annotated[Path, typer.Option(help="Results file (.json).")] = Path("evaluation.json"),
    masks: Annotated[Optional[Path], typer.Option(help="Ground-truth masks: .npy or .npz, N×H×W.")] = None,
    boxes: Annotated[Optional[Path], typer.Option(help="Ground-truth boxes: JSON, per image a list of \\[x0, y0, x1, y1].")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference maps (e.g. fixations): .npy or .npz, N×H×W.")] = None,
    input_key: Annotated[Optional[str], typer.Option(help="Array name inside an .npz input.")] = None,
    masks_key: Annotated[Optional[str], typer.Option(help="Array name inside an .npz of masks.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N inputs.")] = None,
    target: Annotated[Optional[str], typer.Option(
        help="Class to explain (default: the predicted class), or a target spec as explain takes it.")] = None,
    param: Annotated[list[str], typer.Option(help="NAME.key=value for a method or metric (repeatable).")] = [],  # noqa: B006
    baselines: Annotated[bool, typer.Option(help="Score model-free saliency baselines beside the methods.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    *,
    images: ImageOptions,
) -> None:
    """Explain inputs with one or more methods and score the explanations (faithfulness,
    localization, complexity, agreement, model-free baselines) into a JSON file."""
    from onnxlens.evaluation import evaluate as run_evaluation
    from onnxlens.evaluation.evaluate import route_params
    from onnxlens.files import write_json
    from onnxlens.methods.registry import run_method
    from onnxlens.methods.targets import Target

    json_out(out)
    methods, metrics = names(method), names(metric)
    method_params, metric_params = route_params(params_by_name(param), methods, metrics)
    target = None if target is None else Target.parse(target)
    explainer, spec, prep = images.open(model)
    x = explainer.engine.check_input(load_inputs(input, input_key, spec, prep))[:limit]
    truth = None if masks is None else load_array(masks, masks_key, "masks")[: len(x)]
    box_list = None
    if boxes is not None:
        try:
            box_list = json.loads(boxes.read_text())[: len(x)]
        except (OSError, ValueError) as exc:
            raise OnnxLensError(f"cannot read boxes from {str(boxes)!r}: {exc}") from None
    with progress_bar("{task.description}") as bar:
        task = bar.add_task("explaining", total=len(methods))
        explanations = {}
        for name in methods:
            bar.update(task, description=f"explain · {name}")
            explanations[name] = run_method(name, explainer.engine, x, target, **method_params.get(name, {}))
            bar.advance(task)

        def progress(label, done, total):
            bar.update(task, description=label, completed=done, total=total)

        results = run_evaluation(explainer.engine, x, explanations, metrics, truth, box_list,
                                 reference=None if reference is None else load_array(reference, None, "reference")[: len(x)],
                                 params=metric_params, seed=seed, progress=progress,
                                 **({} if baselines else {"baselines": ()}))
    results["model_file"] = model.name
    write_json(out, results)
    print_means(results["metrics"], len(x))
    typer.echo(f"wrote {out}")


def print_means(metrics: dict, inputs: int) -> None:
    """A table of each metric's mean ± its standard error per method (model-free baselines
    marked †)."""
    from onnxlens.bundle import BASELINE_PREFIX, is_baseline

    columns = list(dict.fromkeys(label for entry in metrics.values() for label in entry["results"]))
    table = Table(title=f"{inputs} input(s) · means ± standard error", title_justify="left",
                  caption="† a model-free saliency baseline" if any(map(is_baseline, columns)) else None,
                  caption_justify="left")
    table.add_column("metric", no_wrap=True)
    for label in columns:
        table.add_column(safe(label[len(BASELINE_PREFIX):] + " †" if is_baseline(label) else label), justify="right")
    for name, entry in metrics.items():
        cells = [entry["results"].get(label, {}) for label in columns]
        table.add_row(name, *(_mean_and_error(r) for r in cells))
    Console(width=max(100, Console().width, 26 + 20 * len(columns)), highlight=False).print(table)


def _mean_and_error(result: dict) -> str:
    if result.get("mean") is None:
        return "–"
    error = result.get("standard_error")
    return f"{result['mean']:.3g}" + ("" if error is None else f" ± {error:.2g}")
