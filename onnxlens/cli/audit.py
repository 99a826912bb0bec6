"""``onnxlens audit`` and ``onnxlens serve``: an audit now, or on a schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxlens.cli.common import names, one_line, progress_bar
from onnxlens.errors import OnnxLensError


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
    target: Annotated[Optional[str], typer.Option(
        help="predicted (default), label, or a target spec as explain takes it; class=label and "
             "region=dataset take each item's own label and mask.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Inputs per task.")] = None,
    memory_budget: Annotated[Optional[str], typer.Option(
        help="Most memory one session run may hold, e.g. 2G (default: a quarter of the available memory).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    runner: Annotated[str, typer.Option(help="threads (a Prefect flow), dask or ray (Prefect on worker processes) or direct (no Prefect).")] = "threads",
    workers: Annotated[Optional[int], typer.Option(help="Concurrent tasks, or Dask worker processes.")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Join this Dask scheduler instead of a LocalCluster.")] = None,
    compare: Annotated[Optional[Path], typer.Option(help="An earlier run folder: add a drift summary against it.")] = None,
) -> None:
    """Audit a model: explain every input with each method, evaluate the explanations, write
    results.json, verdict.json, report.html and report.pdf into the run folder. Exit code 0: the verdict
    passed; 5: a `fail` threshold was not met; 1: bad input."""
    from onnxlens.pipelines.audit import audit_directly
    from onnxlens.pipelines.config import load_config

    if runner not in ("threads", "dask", "ray", "direct"):
        raise OnnxLensError(f"--runner must be threads, dask, ray or direct, got {runner!r}")
    if source.suffix.lower() in (".toml", ".yaml", ".yml", ".json"):
        if data is not None or methods is not None:
            raise OnnxLensError("give a config file or a model with --data/--methods, not both")
        config = load_config(source)
    else:
        if data is None or methods is None:
            raise OnnxLensError("auditing a model needs --data and --methods (or pass an audit config file)")
        config = load_config({"model": str(source), "dataset": {"path": str(data)}, "methods": names(methods)})
    config = config.with_overrides(
        dataset={"masks_key": masks_key, "labels_key": labels_key, "mask_suffix": mask_suffix, "limit": limit},
        target=target, batch_size=batch_size, memory_budget=memory_budget, device=device, output=out and str(out), workers=workers, dask_address=dask_address,
        compare=compare and str(compare), runner=runner if runner != "direct" else None, metrics=names(metrics))
    with progress_bar("audit · batches") as bar:
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
            typer.echo(f"  {check['severity'].upper()}: {one_line(check['description'] or check['metric'])} · "
                       f"{one_line(check['method'])} = {value} (limit {limit})")
    for note in results["provenance"]["notes"]:
        if note.startswith("report.pdf not written"):
            typer.echo(f"warning: {note}", err=True)
    for finding in results["findings"]["methods"]:
        if finding["reliability"]["status"] == "flag":
            typer.echo(f"warning: {one_line(finding['method'])}: {one_line(finding['reliability']['text'])}", err=True)
    documents = [name for name in ("report.html", "report.pdf") if (Path(config.output) / name).exists()]
    typer.echo(f"wrote {config.output}/" + ", ".join(["results.json", "verdict.json", *documents]))
    if not verdict["passed"]:
        raise typer.Exit(verdict["exit_code"])


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
