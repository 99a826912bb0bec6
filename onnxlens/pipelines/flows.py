"""Prefect flows over the audit steps: ``explain_run``, ``evaluate_run`` and ``audit_run``,
each body the run's DAG. A task is one batch (all methods, then the evaluation) and takes only
the run folder and the batch number, which keeps Prefect's cost per task at tens of
milliseconds; transient faults (anything that is not an onnxlens error) are retried with
exponential backoff; results live in the run folder, so a retry or a re-run resumes.

Without PREFECT_API_URL, Prefect runs on its ephemeral local API; :func:`quiet_prefect` keeps
that offline and silent (no telemetry, no update checks, server logs off). It runs when this
module is imported, before Prefect is: Prefect starts its SDK telemetry on ``import prefect``
(``prefect/__init__.py``, 3.9) unless ``DO_NOT_TRACK`` is already set, so no later moment
would do. It only sets variables the user has not set, and this is the one module that
imports Prefect."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path

#: Environment for an embedded, offline, quiet Prefect (set before Prefect is imported; a
#: variable the user has set wins).
QUIET_PREFECT = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "false",
}


#: the throwaway PREFECT_HOME :func:`quiet_prefect` made (None: the user's own or an API's)
THROWAWAY_HOME: str | None = None


def quiet_prefect() -> None:
    """Apply :data:`QUIET_PREFECT` (and a throwaway PREFECT_HOME when no API is configured, so
    the ephemeral database starts empty, never grows in the user's home, and goes when this
    process exits)."""
    global THROWAWAY_HOME
    for key, value in QUIET_PREFECT.items():
        os.environ.setdefault(key, value)
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        THROWAWAY_HOME = tempfile.mkdtemp(prefix="onnxlens-prefect-")
        os.environ["PREFECT_HOME"] = THROWAWAY_HOME
        atexit.register(shutil.rmtree, THROWAWAY_HOME, ignore_errors=True)


def database_template() -> Path:
    """Where an empty Prefect database, migrated to this Prefect's schema, is kept: the
    platform cache directory (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    import prefect

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "onnxlens" / "prefect" / prefect.__version__ / "prefect.db"


def seed_database() -> None:
    """Give the throwaway home an empty database already migrated — a copy of
    :func:`database_template`, made by migrating one the first time — so the local API does
    not spend its start-up (8 of 17 s on a 2-core machine) building the schema; every run
    still starts from an empty database of its own."""
    if THROWAWAY_HOME is None or "PREFECT_API_URL" in os.environ or "PREFECT_API_DATABASE_CONNECTION_URL" in os.environ:
        return
    database, template = Path(THROWAWAY_HOME) / "prefect.db", database_template()
    if database.exists():
        return
    if template.exists():
        shutil.copyfile(template, database)
        return
    import asyncio
    import sqlite3

    from prefect.server.database import provide_database_interface

    asyncio.run(provide_database_interface().create_db())
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{os.getpid()}.partial")
    source, copy = sqlite3.connect(database), sqlite3.connect(partial)
    try:  # one consistent file, the write-ahead log folded in
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    os.replace(partial, template)  # atomic: concurrent first runs each write a whole template


quiet_prefect()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from onnxlens.errors import OnnxLensError  # noqa: E402
from onnxlens.pipelines.audit import aggregate  # noqa: E402
from onnxlens.pipelines.config import AuditConfig, load_config  # noqa: E402
from onnxlens.pipelines.evaluating import evaluate_batch  # noqa: E402
from onnxlens.pipelines.explaining import explain_batch  # noqa: E402
from onnxlens.pipelines.run_plan import RunPlan, load_plan, plan  # noqa: E402
from onnxlens.pipelines.server import ephemeral_api, prefect_api  # noqa: E402

def _transient(task_, task_run, state) -> bool:
    """Retry anything but onnxlens's own errors (bad input does not improve on retry)."""
    try:
        state.result()
    except OnnxLensError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


_TASK = dict(cache_policy=NO_CACHE, retry_delay_seconds=exponential_backoff(backoff_factor=1),
             retry_condition_fn=_transient, persist_result=False)


@task(name="audit-batch", **_TASK)
def batch_task(run_dir: str, index: int, evaluate: bool) -> list[dict]:
    """One batch: every method's explanation, then (when asked) the evaluation. Each step is
    stored in the run folder as it finishes, so a retry or a re-run redoes only what is missing."""
    plan_ = load_plan(run_dir)
    log = [explain_batch(plan_, index, label) for label in plan_.audit.method_labels()]
    if evaluate:
        log.append(evaluate_batch(plan_, index))
    where = f"{socket.gethostname()}:{os.getpid()}"
    return [{**entry, "process": where} for entry in log]


def _publish(results: dict) -> None:
    """The verdict and metric means as Prefect artifacts, for the UI of the server that
    PREFECT_API_URL names."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    verdict = results["verdict"]
    lines = [f"# onnxlens audit: {'PASSED' if verdict['passed'] else 'FAILED'}",
             f"{results['items']['evaluated']} of {results['items']['total']} inputs evaluated, "
             f"{len(results['items']['failed'])} failed."]
    lines += [f"- {c['description'] or c['metric']} · {c['method']}: {c['value']} "
              f"({'ok' if c['passed'] else c['severity']})" for c in verdict["checks"]]
    create_markdown_artifact("\n".join(lines), key="onnxlens-verdict")
    rows = [{"metric": name, **{label: r["mean"] for label, r in entry["results"].items()}}
            for name, entry in results["evaluation"].get("metrics", {}).items()]
    if rows:
        create_table_artifact(rows, key="onnxlens-metric-means")


def _batches(plan_: RunPlan, evaluate: bool, retries: int, progress) -> list[dict]:
    """Every batch as a task (run by the flow's task runner); the log of every step."""
    batch = batch_task.with_options(retries=retries)
    futures = [batch.submit(plan_.run_dir, index, evaluate) for index in range(len(plan_.batches))]
    log = []
    for done, future in enumerate(futures, 1):
        log += future.result()
        if progress:
            progress(done, len(futures))
    return log


_FLOW = dict(log_prints=False, validate_parameters=False, persist_result=False)


@flow(name="onnxlens-explain", **_FLOW)
def explain_run(config: dict, run_dir: str | None = None, progress=None) -> dict:
    """Plan, then explain every batch with every method."""
    cfg = load_config(config)
    plan_ = plan(cfg, run_dir)
    return {"run_dir": plan_.run_dir, "tasks": _batches(plan_, False, cfg.retries, progress)}


@flow(name="onnxlens-evaluate", **_FLOW)
def evaluate_run(config: dict, run_dir: str | None = None, progress=None) -> dict:
    """Plan, then explain and evaluate every batch."""
    cfg = load_config(config)
    plan_ = plan(cfg, run_dir)
    return {"run_dir": plan_.run_dir, "tasks": _batches(plan_, True, cfg.retries, progress)}


@flow(name="onnxlens-audit", **_FLOW)
def audit_run(config: dict, run_dir: str | None = None, progress=None) -> dict:
    """Plan → explain and evaluate every batch → aggregate: results.json, verdict.json and the
    documents in the run folder; returns the run folder and the verdict (the rest stays on
    disk). ``progress(done, total)`` is called as batches finish."""
    cfg = load_config(config)
    plan_ = plan(cfg, run_dir)
    results = aggregate(plan_, _batches(plan_, True, cfg.retries, progress))  # reads the run folder
    if os.environ.get("PREFECT_API_URL"):  # a UI to show them in (the ephemeral API has none)
        _publish(results)
    return {"run_dir": plan_.run_dir, "verdict": results["verdict"]}


def _runner(cfg):
    if cfg.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise OnnxLensError('runner "ray" needs prefect-ray: pip install "onnxlens[ray]"') from None
        return RayTaskRunner(init_kwargs={"num_cpus": cfg.workers, "include_dashboard": False,
                                          "log_to_driver": False})
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise OnnxLensError('runner "dask" needs prefect-dask: pip install "onnxlens[dask]"') from None
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def run_flow(flow_, config, run_dir: str | None = None, progress=None) -> dict:
    """Run a flow on the config's runner (threads, or Dask or Ray worker processes — which
    need a real Prefect API: :func:`prefect_api` finds or starts one), without the per-run
    heartbeat."""
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    seed_database()
    with ExitStack() as stack:
        stack.enter_context(prefect_api() if cfg.runner in ("dask", "ray") else ephemeral_api())
        stack.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        return flow_.with_options(task_runner=_runner(cfg))(json.loads(cfg.model_dump_json()), run_dir, progress)


def audit_flow(config, run_dir: str | None = None, progress=None) -> dict:
    """The audit as a Prefect flow on the config's runner; returns the results (results.json)."""
    outcome = run_flow(audit_run, config, run_dir, progress)
    return json.loads((Path(outcome["run_dir"]) / "results.json").read_text())
