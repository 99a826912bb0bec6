"""The onnxlens command line. Errors print one line on stderr and exit non-zero."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from onnxlens.errors import OnnxLensError

app = typer.Typer(
    name="onnxlens",
    help="Explain and audit image CNNs exported to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1
EXIT_INTERNAL = 3


@app.callback()
def _root() -> None:
    """Explain and audit image CNNs exported to ONNX."""


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="Path to an .onnx file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a stable JSON document.")] = False,
    layout: Annotated[Optional[str], typer.Option(help="Force the input layout: NCHW or NHWC.")] = None,
    max_size: Annotated[
        Optional[int], typer.Option(help="Refuse models larger than this many bytes (with external data).")
    ] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Also list candidate layers for CAM-style methods.")] = False,
) -> None:
    """Load, validate and describe a model: inputs and layout, outputs, ops, parameters."""
    from onnxlens.runtime.model_import import import_model

    imported = import_model(model, layout=layout.upper() if layout else None, max_bytes=max_size)
    info = imported.describe()
    if layers:
        from onnxlens.runtime.engine import Engine
        from onnxlens.runtime.session import SessionConfig

        candidates = Engine(imported, SessionConfig(device="cpu")).layers()
        info["layers"] = [{"name": n, "shape": list(shape), "default": i == len(candidates) - 1}
                          for i, (n, shape) in enumerate(candidates)]
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=True))
    else:
        _print_description(info, Console(width=max(100, Console().width), highlight=False))


# Options that explain and evaluate share: how image files become inputs, and where to run.
MeanOption = Annotated[Optional[str], typer.Option(help="Images: per-channel mean, e.g. 0.485,0.456,0.406.")]
StdOption = Annotated[Optional[str], typer.Option(help="Images: per-channel std.")]
ChannelOrderOption = Annotated[str, typer.Option(help="Images: rgb or bgr.")]
ValueRangeOption = Annotated[str, typer.Option(help="Images: 0-1 or 0-255 before mean/std.")]
LayoutOption = Annotated[Optional[str], typer.Option(help="Force the input layout: NCHW or NHWC.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]


def _preprocessing(mean: Optional[str], std: Optional[str], channel_order: str, value_range: str):
    from onnxlens.pipelines.images import Preprocessing

    return Preprocessing(_floats(mean), _floats(std), channel_order, value_range)


def _open(model: Path, device: str, layout: Optional[str], mean: Optional[str], std: Optional[str],
          channel_order: str, value_range: str):
    """The model's Explainer, its image input and the preprocessing the image options ask for."""
    from onnxlens.methods import Explainer

    explainer = Explainer(model, device=device, layout=layout.upper() if layout else None)
    return explainer, explainer.model.spec.image_input, _preprocessing(mean, std, channel_order, value_range)


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OnnxLensError(f"--param takes key=value, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def _params_by_name(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``--param NAME.key=value`` options as name → {key: value}."""
    grouped: dict[str, dict] = {}
    for key, value in _parse_params(pairs).items():
        name, dot, field = key.partition(".")
        if not dot or not field:
            raise OnnxLensError(f"--param takes NAME.key=value (a method or metric name), got {key!r}")
        grouped.setdefault(name, {})[field] = value
    return grouped


def _floats(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise OnnxLensError(f"expected comma-separated numbers, got {text!r}") from None


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="Path to an .onnx file.")],
    input: Annotated[Path, typer.Option("--input", help=".npy shaped for the model, an image, or a folder of images.")],
    method: Annotated[str, typer.Option(help="Method name, e.g. gradient, integrated_gradients.")] = "gradient",
    out: Annotated[Path, typer.Option(help="Output: .npz (arrays) or .png (overlay); a folder for a folder input.")] = Path("explanation.png"),
    target: Annotated[Optional[int], typer.Option(help="Class to explain (default: the predicted class).")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Tensor name for layer methods.")] = None,
    param: Annotated[list[str], typer.Option(help="Method parameter key=value (repeatable).")] = [],  # noqa: B006
    colormap: Annotated[str, typer.Option(help="Matplotlib colormap of .png overlays.")] = "jet",
    fmt: Annotated[str, typer.Option("--format", help="Per-image output for a folder input: png or npz.")] = "png",
    mean: MeanOption = None,
    std: StdOption = None,
    channel_order: ChannelOrderOption = "rgb",
    value_range: ValueRangeOption = "0-1",
    layout: LayoutOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Explain a model's prediction for an input array, an image or a folder of images."""
    import numpy as np
    from rich.progress import track

    from onnxlens.methods.registry import coerce_params, method_info
    from onnxlens.methods.explanation import displayable
    from onnxlens.pipelines.images import list_images, load_image
    from onnxlens.report.overlay import save_overlay

    params = _parse_params(param)
    if layer is not None:
        params["layer"] = layer
    coerce_params(method_info(method), params)  # fail on a bad name before the model loads
    if not input.is_dir() and out.suffix not in (".npz", ".png"):
        raise OnnxLensError(f"--out must end in .npz or .png, got {str(out)!r}")
    explainer, spec, prep = _open(model, device, layout, mean, std, channel_order, value_range)

    def write(path: Path, row: np.ndarray, explanation) -> None:
        if path.suffix == ".npz":
            explanation.save_npz(path)
        elif path.suffix == ".png":
            save_overlay(path, displayable(row, spec.layout), explanation.heatmap[0], colormap)
        else:
            raise OnnxLensError(f"--out must end in .npz or .png, got {str(path)!r}")

    if input.is_dir():
        images = list_images(input)
        if not images:
            raise OnnxLensError(f"no images found in {str(input)!r}")
        if fmt not in ("png", "npz"):
            raise OnnxLensError(f"--format must be png or npz, got {fmt!r}")
        out.mkdir(parents=True, exist_ok=True)
        failed = []
        for path in track(images, description=f"{method}", console=Console(stderr=True), transient=True):
            try:
                row = load_image(path, spec, prep)
                write(out / f"{path.relative_to(input).with_suffix('').as_posix().replace('/', '__')}.{fmt}",
                      row, explainer.explain(row[None], method, target, **params))
            except OnnxLensError as exc:
                failed.append(f"{path.name}: {exc}")
        typer.echo(f"wrote {len(images) - len(failed)} explanation(s) to {out}")
        if failed:
            raise OnnxLensError(f"{len(failed)} of {len(images)} image(s) failed; first: {failed[0]}")
        return
    if not input.exists():
        raise OnnxLensError(f"input {str(input)!r} does not exist")
    if input.suffix.lower() in (".npy", ".npz"):
        x = _load_array(input, None, "input")
    else:
        x = load_image(input, spec, prep)
    batch = explainer.engine.check_input(x)
    if len(batch) > 1 and out.suffix == ".png":
        raise OnnxLensError("a .png overlay shows one input; use .npz for a batch")
    explanation = explainer.explain(batch, method, target, **params)
    for line in explanation.warnings:
        typer.echo(f"onnxlens: warning: {_safe(line)}", err=True)
    write(out, batch[0], explanation)
    typer.echo(f"{method}: class {explanation.target.tolist()} score {np.round(explanation.score, 4).tolist()} → {out}")


def _load_array(path: Path, key: Optional[str], what: str):
    """An array from a .npy file, or from a .npz by ``key`` (default: its only array, or ``x``)."""
    import numpy as np

    if not path.exists():
        raise OnnxLensError(f"{what} {str(path)!r} does not exist")
    cannot = f"cannot read {str(path)!r} as .npy/.npz"
    overclaims = f"{cannot}: its header claims more data than the file holds"
    try:
        # A .npy is mapped first, so a header claiming more data than the file holds is
        # refused before anything is allocated; MemoryError: the same claim inside a .npz.
        data = np.load(path, allow_pickle=False, mmap_mode="r")
        if not hasattr(data, "files"):
            return np.array(data)
        with data:
            names = list(data.files)
            chosen = key or (names[0] if len(names) == 1 else "x" if what == "input" and "x" in names else None)
            if chosen not in names:
                raise OnnxLensError(f"{str(path)!r} holds {', '.join(names)}; name the {what} array with "
                                    f"--{'input' if what == 'input' else 'masks'}-key")
            return data[chosen]
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        if "mmap length is greater than file size" in str(exc):
            raise OnnxLensError(overclaims) from None
        raise OnnxLensError(f"{cannot}: {_one_line(str(exc)) or 'the file is empty'}") from None
    except MemoryError:
        raise OnnxLensError(overclaims) from None


def _inputs(input: Path, key: Optional[str], spec, prep):
    """A batch from a .npy/.npz array, an image file, or a folder of images."""
    import numpy as np

    from onnxlens.pipelines.images import list_images, load_image

    if input.is_dir():
        images = list_images(input)
        if not images:
            raise OnnxLensError(f"no images found in {str(input)!r}")
        return np.stack([load_image(p, spec, prep) for p in images])
    if input.suffix.lower() in (".npy", ".npz"):
        return _load_array(input, key, "input")
    if not input.exists():
        raise OnnxLensError(f"input {str(input)!r} does not exist")
    return load_image(input, spec, prep)[None]


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Path to an .onnx file.")],
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
    target: Annotated[Optional[int], typer.Option(help="Class to explain (default: the predicted class).")] = None,
    param: Annotated[list[str], typer.Option(help="NAME.key=value for a method or metric (repeatable).")] = [],  # noqa: B006
    baselines: Annotated[bool, typer.Option(help="Score model-free saliency baselines beside the methods.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    mean: MeanOption = None,
    std: StdOption = None,
    channel_order: ChannelOrderOption = "rgb",
    value_range: ValueRangeOption = "0-1",
    layout: LayoutOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Explain inputs with one or more methods and score the explanations (faithfulness,
    localization, complexity, agreement, model-free baselines) into a JSON file."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxlens.evaluation import DEFAULT_METRICS, evaluate as run_evaluation, metric_info
    from onnxlens.files import write_json
    from onnxlens.bundle import BASELINE_PREFIX, is_baseline
    from onnxlens.evaluation.baselines import BASELINES
    from onnxlens.evaluation.registry import MetricError
    from onnxlens.methods.registry import coerce_params, method_info, run_method

    if out.suffix.lower() != ".json":
        raise OnnxLensError(f"--out must end in .json, got {str(out)!r}")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    metrics = [m.strip() for m in metric.split(",") if m.strip()] if metric else None
    grouped = _params_by_name(param)
    for name in methods:
        method_info(name)
    for name in metrics or []:
        metric_info(name)
    for name, values in grouped.items():
        if name in methods:
            grouped[name] = coerce_params(method_info(name), values)
        elif name in (metrics or DEFAULT_METRICS):
            grouped[name] = coerce_params(metric_info(name), values, "metric", MetricError)
        else:
            raise OnnxLensError(f"--param names {name!r}, which is neither a chosen method nor a chosen metric")
    explainer, spec, prep = _open(model, device, layout, mean, std, channel_order, value_range)
    x = explainer.engine.check_input(_inputs(input, input_key, spec, prep))
    if limit is not None:
        x = x[:limit]
    truth = None
    if masks is not None:
        truth = _load_array(masks, masks_key, "masks")[: len(x)]
    box_list = None
    if boxes is not None:
        try:
            box_list = json.loads(boxes.read_text())[: len(x)]
        except (OSError, ValueError) as exc:
            raise OnnxLensError(f"cannot read boxes from {str(boxes)!r}: {exc}") from None
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("explaining", total=len(methods))
        explanations = {}
        for name in methods:
            bar.update(task, description=f"explain · {name}")
            explanations[name] = run_method(name, explainer.engine, x, target, **grouped.get(name, {}))
            bar.advance(task)

        def progress(label, done, total):
            bar.update(task, description=label, completed=done, total=total)

        results = run_evaluation(explainer.engine, x, explanations, metrics, truth, box_list,
                                 reference=None if reference is None else _load_array(reference, None, "reference")[: len(x)],
                                 params={k: v for k, v in grouped.items() if k not in methods},
                                 baselines=tuple(BASELINES) if baselines else (), seed=seed, progress=progress)
    results["model_file"] = model.name
    write_json(out, results)
    columns = list(dict.fromkeys(label for entry in results["metrics"].values() for label in entry["results"]))
    table = Table(title=f"{len(x)} input(s) · means", title_justify="left",
                  caption="† a model-free saliency baseline" if any(map(is_baseline, columns)) else None,
                  caption_justify="left")
    table.add_column("metric", no_wrap=True)
    for label in columns:
        table.add_column(_safe(label[len(BASELINE_PREFIX):] + " †" if is_baseline(label) else label), justify="right")
    for name, entry in results["metrics"].items():
        cells = [entry["results"].get(label, {}).get("mean") for label in columns]
        table.add_row(name, *("–" if v is None else f"{v:.3g}" for v in cells))
    Console(width=max(100, Console().width, 26 + 14 * len(columns)), highlight=False).print(table)
    typer.echo(f"wrote {out}")


@app.command()
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
    mean: MeanOption = None,
    std: StdOption = None,
    channel_order: ChannelOrderOption = "rgb",
    value_range: ValueRangeOption = "0-1",
    layout: LayoutOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Does the deployed form of a model look where the reference looks? Top-1 agreement, score
    deviation and, per method, the agreement of the two models' maps (most-changed inputs
    first); exits 1 when a --threshold fails."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxlens.evaluation.deployment import THRESHOLDS, ComparisonError, check_pair, compare_deployment
    from onnxlens.files import write_json
    from onnxlens.methods.explanation import displayable
    from onnxlens.methods.registry import coerce_params, method_info
    from onnxlens.methods.explainer import Explainer
    from onnxlens.report.overlay import comparison_grid

    if out.suffix.lower() != ".json":
        raise OnnxLensError(f"--out must end in .json, got {str(out)!r}")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    given = _params_by_name(param)
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise OnnxLensError(f"--param names {unknown[0]!r}, which is not a chosen method")
    grouped = {name: coerce_params(method_info(name), given.get(name, {})) for name in names}
    limits = {}
    for key, value in _parse_params(threshold).items():
        if key not in THRESHOLDS:
            raise ComparisonError(f"unknown threshold {key!r}; known: {', '.join(THRESHOLDS)}")
        limits[key] = _floats(value)[0]
    explainer, spec, prep = _open(reference, device, layout, mean, std, channel_order, value_range)
    other = Explainer(deployed, device=device, layout=spec.layout if layout else None)
    check_pair(explainer.engine, other.engine)  # before the progress bar: one line on a mismatch
    x = explainer.engine.check_input(_inputs(data, input_key, spec, prep))[:limit]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("compare", total=len(grouped))

        def progress(label, done, total):
            bar.update(task, description=label, completed=done, total=total)

        result, maps = compare_deployment(explainer.engine, other.engine, x,
                                          {name: (name, params) for name, params in grouped.items()},
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
        typer.echo(f"onnxlens: warning: {_safe(line)}", err=True)
    typer.echo(f"wrote {out}" + (f" and {min(top, len(x))} overlay(s) to {overlays}/" if overlays else ""))
    failed = [c for c in result["verdict"]["checks"] if not c["passed"]]
    for check in failed:
        value = "–" if check["value"] is None else f"{check['value']:.4g}"
        typer.echo(f"  FAIL: {check['threshold']}{' · ' + check['method'] if check['method'] else ''} = {value} "
                   f"(limit {check['limit']})")
    if failed:
        raise typer.Exit(1)


@app.command()
def tcav(
    model: Annotated[Path, typer.Argument(help="Path to an .onnx file.")],
    concept: Annotated[Path, typer.Option(help="The concept's example images: a folder, an image or .npy/.npz.")],
    random: Annotated[list[Path], typer.Option(help="Random images: a folder (repeatable: one random set each).")],
    layer: Annotated[str, typer.Option(help="The tensor whose activations hold the concept (see inspect --layers).")],
    inputs: Annotated[Path, typer.Option("--inputs", help="Images of the class to test: a folder, an image or .npy/.npz.")],
    class_: Annotated[Optional[int], typer.Option("--class", help="Class to test (default: the one most predicted on --inputs).")] = None,
    runs: Annotated[int, typer.Option(help="Concept CAVs (one per random set) and random CAVs for the t-test.")] = 10,
    alpha: Annotated[float, typer.Option(help="Significance level of the two-sided t-test.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the random sets drawn from the random images.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
    mean: MeanOption = None,
    std: StdOption = None,
    channel_order: ChannelOrderOption = "rgb",
    value_range: ValueRangeOption = "0-1",
    layout: LayoutOption = None,
    device: DeviceOption = "auto",
) -> None:
    """TCAV (Kim et al., 2018): is a concept, given by example images, significant for a class at
    a layer? Prints the TCAV score, the random directions' score and the t-test's p-value."""
    from onnxlens.files import write_json
    from onnxlens.methods.tcav import tcav as run_tcav

    explainer, spec, prep = _open(model, device, layout, mean, std, channel_order, value_range)
    concept_x = _inputs(concept, None, spec, prep)
    random_sets = [_inputs(r, None, spec, prep) for r in random]
    result = run_tcav(explainer.engine, _inputs(inputs, None, spec, prep), concept_x, random_sets, layer, class_, runs=runs, alpha=alpha, seed=seed)
    verdict = "significant" if result.significant else "not significant"
    typer.echo(f"TCAV of {_one_line(str(concept))} for class {result.target} at {_one_line(layer)}: "
               f"{result.score:.3f} ± {result.scores.std():.3f} (random directions {result.random_scores.mean():.3f} ± "
               f"{result.random_scores.std():.3f}); p = {result.p_value:.3g}: {verdict} at α = {alpha}")
    if out is not None:
        write_json(out, {"model_file": model.name, "concept": str(concept), **result.to_dict()})
        typer.echo(f"wrote {out}")


@app.command()
def distill(
    model: Annotated[Path, typer.Argument(help="Path to an .onnx file.")],
    data: Annotated[Path, typer.Option(help="Inputs to distill on: a folder of images or .npy/.npz shaped for the model.")],
    depth: Annotated[int, typer.Option(help="Depth of the soft decision tree (2^depth leaves).")] = 5,
    heldout: Annotated[float, typer.Option(help="Share of the inputs held out to measure fidelity.")] = 0.25,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the model's targets.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split and the initial weights.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the tree (.npz: weights, biases, leaves, fidelity).")] = None,
    filters: Annotated[Optional[Path], typer.Option(help="Write the inner nodes' filters as one PNG grid.")] = None,
    input_key: Annotated[Optional[str], typer.Option(help="Array name inside an .npz.")] = None,
    mean: MeanOption = None,
    std: StdOption = None,
    channel_order: ChannelOrderOption = "rgb",
    value_range: ValueRangeOption = "0-1",
    layout: LayoutOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Distill the model into a soft decision tree (Frosst & Hinton, 2017) and report its
    fidelity — how often it predicts the model's class — on held-out inputs."""
    import numpy as np
    from PIL import Image

    from onnxlens.files import npz_bytes, write_atomic
    from onnxlens.methods.soft_tree import distill as run_distill
    from onnxlens.report.figures import tile_grid

    explainer, spec, prep = _open(model, device, layout, mean, std, channel_order, value_range)
    x = explainer.engine.check_input(_inputs(data, input_key, spec, prep))
    tree, report = run_distill(explainer.engine, x, depth, heldout=heldout, temperature=temperature, seed=seed)
    typer.echo(f"soft tree of depth {depth} ({2 ** depth} leaves) on {report['train_inputs']} inputs: fidelity "
               f"{report['fidelity_train']:.3f} on them, {report['fidelity_heldout']:.3f} on {report['heldout_inputs']} held out")
    if out is not None:
        write_atomic(out, npz_bytes(weights=tree.weights, biases=tree.biases, leaves=tree.leaves, mean=tree.mean,
                                    scale=tree.scale, report=np.asarray(json.dumps(report))))
        typer.echo(f"wrote {out}")
    if filters is not None:
        maps = tree.filters(x.shape[1:])
        if spec.layout == "NHWC":
            maps = np.moveaxis(maps, -1, 1)
        Image.fromarray(tile_grid(maps)).save(filters)
        typer.echo(f"wrote {filters}")


@app.command()
def audit(
    source: Annotated[Path, typer.Argument(help="An audit config (.toml/.yaml/.json), or a model (.onnx) with --data.")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset: image folder, .npy/.npz, or manifest .csv/.json.")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Method names, comma-separated.")] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Metric names, comma-separated (default: the evaluation defaults).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: the config's output, else audit_run).")] = None,
    masks_key: Annotated[Optional[str], typer.Option(help="Masks array inside an .npz dataset.")] = None,
    labels_key: Annotated[Optional[str], typer.Option(help="Labels array inside an .npz dataset.")] = None,
    mask_suffix: Annotated[Optional[str], typer.Option(help="Image folder: image.png → image{suffix}.png is its mask.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Audit only the first N inputs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Inputs per task.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    runner: Annotated[str, typer.Option(help="threads (a Prefect flow), dask or ray (Prefect on worker processes) or direct (no Prefect).")] = "threads",
    workers: Annotated[Optional[int], typer.Option(help="Concurrent tasks, or Dask worker processes.")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Join this Dask scheduler instead of a LocalCluster.")] = None,
    compare: Annotated[Optional[Path], typer.Option(help="An earlier run folder: add a drift summary against it.")] = None,
) -> None:
    """Audit a model: explain every input with each method, evaluate the explanations, write
    results.json, verdict.json, report.html and report.pdf into the run folder. Exit code 0: the verdict
    passed; 5: a `fail` threshold was not met; 1: bad input."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxlens.pipelines.audit import audit_directly
    from onnxlens.pipelines.config import load_config

    if source.suffix.lower() in (".toml", ".yaml", ".yml", ".json"):
        raw = json.loads(load_config(source).model_dump_json())
        if data is not None or methods is not None:
            raise OnnxLensError("give a config file or a model with --data/--methods, not both")
    else:
        if data is None or methods is None:
            raise OnnxLensError("auditing a model needs --data and --methods (or pass an audit config file)")
        raw = {"model": str(source), "dataset": {"path": str(data)},
               "methods": [m.strip() for m in methods.split(",") if m.strip()]}
    dataset = raw["dataset"]
    for key, value in (("masks_key", masks_key), ("labels_key", labels_key), ("mask_suffix", mask_suffix),
                       ("limit", limit)):
        if value is not None:
            dataset[key] = value
    if runner not in ("threads", "dask", "ray", "direct"):
        raise OnnxLensError(f"--runner must be threads, dask, ray or direct, got {runner!r}")
    for key, value in (("batch_size", batch_size), ("device", device), ("output", str(out) if out else None),
                       ("workers", workers), ("dask_address", dask_address),
                       ("compare", str(compare) if compare else None),
                       ("runner", runner if runner != "direct" else None)):
        if value is not None:
            raw[key] = value
    if metrics is not None:
        raw["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    config = load_config(raw)
    console = Console(stderr=True)
    with Progress(TextColumn("audit"), BarColumn(), TextColumn("{task.completed}/{task.total} batches"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("audit", total=None)

        def progress(done, total):
            bar.update(task, completed=done, total=total)

        if runner == "direct":
            results = audit_directly(config, progress=progress)
        else:
            from onnxlens.pipelines import flows

            results = flows.audit_flow(config, progress=progress)
    verdict = results["verdict"]
    items = results["items"]
    typer.echo(f"audit {'PASSED' if verdict['passed'] else 'FAILED'}: {items['evaluated']} of {items['total']} "
               f"input(s) evaluated, {len(items['failed'])} failed; "
               f"{results['provenance']['tasks_computed']} task(s) computed, "
               f"{results['provenance']['tasks_reused']} reused from an earlier run")
    for check in verdict["checks"]:
        if not check["passed"]:
            value = "–" if check["value"] is None else f"{check['value']:.4g}"
            limit = " ".join(p for p in (f"≤ {check['max']}" if check["max"] is not None else "",
                                         f"≥ {check['min']}" if check["min"] is not None else "") if p)
            typer.echo(f"  {check['severity'].upper()}: {_one_line(check['description'] or check['metric'])} · "
                       f"{_one_line(check['method'])} = {value} (limit {limit})")
    for note in results["provenance"]["notes"]:
        if note.startswith("report.pdf not written"):
            typer.echo(f"warning: {note}", err=True)
    documents = [name for name in ("report.html", "report.pdf") if (Path(config.output) / name).exists()]
    typer.echo(f"wrote {config.output}/" + ", ".join(["results.json", "verdict.json", *documents]))
    if not verdict["passed"]:
        raise typer.Exit(verdict["exit_code"])


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="An audit config (.toml/.yaml/.json).")],
    cron: Annotated[Optional[str], typer.Option(help='Cron schedule, e.g. "0 2 * * *" (2 a.m. daily).')] = None,
    interval: Annotated[Optional[float], typer.Option(help="Or: run every this many seconds.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Deployment name (default: audit-CONFIGNAME).")] = None,
    run_once: Annotated[bool, typer.Option("--run-once", help="Trigger one run now, execute it and exit.")] = False,
) -> None:
    """Serve a scheduled audit: a Prefect deployment on PREFECT_API_URL's server, or on a local
    server started on loopback (stopped on exit). Each run writes OUTPUT/<UTC time>/."""
    from onnxlens.pipelines.schedules import serve_audit

    serve_audit(config, cron, interval, name, run_once, announce=typer.echo)


@app.command()
def report(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run folder written by onnxlens audit.")] = None,
    formats: Annotated[str, typer.Option("--formats", help="Documents to write: html, pdf (comma-separated).")] = "html,pdf",
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON Schema of results.json and exit.")] = False,
) -> None:
    """Render a run's verdict.json, report.html and report.pdf from its results.json and the
    arrays beside it (neither the model nor the dataset is needed)."""
    from onnxlens.bundle import json_schema
    from onnxlens.report.render import render_run

    if schema:
        typer.echo(json.dumps(json_schema(), indent=1))
        return
    if run_dir is None:
        raise OnnxLensError("give a run folder (or --schema)")
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(chosen) - {"html", "pdf"})
    if unknown:
        raise OnnxLensError(f"unknown report format(s) {', '.join(map(repr, unknown))}; choose from html, pdf")
    for path in render_run(run_dir, chosen):
        typer.echo(f"wrote {path}")


def _safe(value) -> Text:
    """Untrusted model text for the terminal: no markup, control characters escaped."""
    s = "" if value is None else str(value)
    return Text("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s))


def _dims(shape) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _print_description(info: dict, console: Console) -> None:
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    rows = [
        ("file", info["file"]),
        ("size", f"{info['size_bytes']:,} bytes" + (f" (external data: {', '.join(info['external_data'])})"
                                                    if info["external_data"] else "")),
        ("sha256", info["sha256"]),
        ("producer", f"{info['producer']['name']} {info['producer']['version']}".strip() or "unknown"),
        ("IR version", str(info["ir_version"])),
        ("opset", f"{opsets} (canonical {info['canonical_opset']})"),
        ("parameters", f"{info['parameter_count']:,} ({info['parameter_bytes']:,} bytes)"),
        ("nodes", str(info["node_count"])),
    ]
    if info["doc_string"]:
        doc = info["doc_string"]
        rows.append(("doc_string", doc if len(doc) <= 200 else doc[:200] + "…"))
    rows += [(f"metadata {k}", v) for k, v in info["metadata"].items()]
    rows += [("canonicalized", note) for note in info["canonicalization"]]
    rows += [("shape fix", fix) for fix in info["shape_fixes"]]
    rows.append(("verified", info["verification"]))
    rows.append(("batch", f"{info['batch']['accepted']} ({info['batch']['note']})"))
    quant = info["quantization"]
    if quant:
        ops = ", ".join(f"{op}×{n}" for op, n in quant["ops"].items())
        rows.append(("quantization", f"{quant['format']}, {'/'.join(quant['types'])}, "
                                     f"{' and '.join(quant['granularity'])}; ops: {ops}"))
    backward = info["backward"]
    if backward["supported"]:
        rows.append(("backward", "supported (gradient methods available)"))
    else:
        missing = "; ".join(f"{op} ({', '.join(nodes[:3])}{', …' if len(nodes) > 3 else ''})"
                            for op, nodes in backward["missing"].items())
        rows.append(("backward", f"missing: {missing or backward['reason']} — forward-only methods still apply"))
    for key, value in rows:
        head.add_row(_safe(key), _safe(value))
    console.print(head)

    inputs = Table(title="inputs", title_justify="left")
    for col in ("name", "role", "dtype", "shape", "layout", "evidence"):
        inputs.add_column(col)
    for i in info["inputs"]:
        inputs.add_row(_safe(i["name"]), i["role"], i["dtype"], _safe(_dims(i["shape"])),
                       i.get("layout", ""), _safe(i.get("layout_evidence", "")))
    console.print(inputs)

    outputs = Table(title="outputs", title_justify="left")
    for col in ("name", "dtype", "shape", "trailing activation", "logits tensor"):
        outputs.add_column(col)
    for o in info["outputs"]:
        outputs.add_row(_safe(o["name"]), o["dtype"], _safe(_dims(o["shape"])),
                        o["activation"] or "none", _safe(o["logits"] or ""))
    console.print(outputs)

    if "layers" in info:
        table = Table(title="layers (for --layer; the last is the default)", title_justify="left")
        for col in ("tensor", "shape", ""):
            table.add_column(col)
        for layer in info["layers"]:
            table.add_row(_safe(layer["name"]), _safe(_dims(layer["shape"])), "default" if layer["default"] else "")
        console.print(table)

    ops = Table(title="op types", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info["op_histogram"].items():
        ops.add_row(_safe(op), str(n))
    console.print(ops)


def _one_line(message: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in message).split())


def main() -> None:
    """Console entry point: runs the app, turning errors into one line on stderr."""
    # Only onnxlens speaks on stderr: library warnings (numpy's overflow or invalid-value
    # notes among them) stay quiet, and non-finite results are refused explicitly.
    warnings.simplefilter("ignore")
    try:
        app()
    except OnnxLensError as exc:
        print(f"onnxlens: error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # the no-traceback contract covers our own bugs too
        if os.environ.get("ONNXLENS_DEBUG"):
            raise
        print(f"onnxlens: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set ONNXLENS_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
