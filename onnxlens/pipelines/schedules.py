"""Scheduled audits: a Prefect deployment of the audit flow, served on a real Prefect API (the
ephemeral one cannot schedule). Each scheduled run writes its own time-stamped run folder, so
audits over time can be compared."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from prefect import flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.task_runners import ThreadPoolTaskRunner

from onnxlens.pipelines import flows
from onnxlens.pipelines.config import ConfigError, load_config
from onnxlens.pipelines.server import prefect_api


@flow(name="onnxlens-scheduled-audit", persist_result=False, validate_parameters=False,
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def scheduled_audit(config_path: str) -> dict:
    """The audit of ``config_path`` into ``<output>/<UTC time>/``, with its drift since the
    previous scheduled run."""
    config = load_config(config_path)
    base = Path(config.output)
    earlier = sorted(p for p in base.glob("*T*Z") if (p / "results.json").exists()) if base.exists() else []
    if earlier and config.compare is None:
        config.compare = earlier[-1]  # each scheduled run reports its drift since the last one
    run_dir = base / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return flows.audit_run(json.loads(config.model_dump_json()), str(run_dir))


def audit_deployment(config_path: str | Path, cron: str | None = None, interval: float | None = None,
                     name: str | None = None) -> RunnerDeployment:
    """The deployment of a scheduled audit (the config is validated now, not at 2 a.m.)."""
    if (cron is None) == (interval is None):
        raise ConfigError("a schedule needs exactly one of --cron or --interval")
    if interval is not None and interval <= 0:
        raise ConfigError(f"--interval must be a positive number of seconds, got {interval}")
    path = Path(config_path).resolve()
    load_config(path)
    try:
        return scheduled_audit.to_deployment(
            name=name or f"audit-{path.stem}", cron=cron, interval=interval,
            parameters={"config_path": str(path)}, entrypoint_type=EntrypointType.MODULE_PATH)
    except ValueError as exc:
        raise ConfigError(f"invalid schedule: {exc}") from None


def serve_audit(config_path: str | Path, cron: str | None = None, interval: float | None = None,
                name: str | None = None, run_once: bool = False,
                announce: Callable[[str], None] = print) -> None:
    """Serve the deployment until interrupted (``run_once``: trigger one run now, execute it,
    and return), on PREFECT_API_URL's server or a local one started for the purpose."""
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    deployment = audit_deployment(config_path, cron, interval, name)
    with prefect_api(ui=True) as url:
        announce(f"Prefect API {url} · UI {url.removesuffix('/api')} · deployment "
                 f"onnxlens-scheduled-audit/{deployment.name} ({cron or f'every {interval:g} s'})")
        runner = Runner(name=f"onnxlens-{deployment.name}", limit=1)
        runner.add_deployment(deployment)
        if run_once:
            run_deployment(f"onnxlens-scheduled-audit/{deployment.name}", timeout=0)
        asyncio.run(runner.start(run_once=run_once))
