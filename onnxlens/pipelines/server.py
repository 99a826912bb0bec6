"""A real Prefect API for what the ephemeral one cannot do (schedules; Dask workers, which would
each start their own): the server PREFECT_API_URL names, else ``prefect server start`` on
loopback with a throwaway home, stopped when the block ends."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onnxlens.errors import OnnxLensError


class PrefectServerError(OnnxLensError):
    """A local Prefect server did not come up."""


def _die_with_parent() -> None:
    """In a child between fork and exec: ask Linux for SIGTERM when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` of an audit cannot orphan its API server."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


#: ``preexec_fn`` for server processes: where Linux offers a parent-death signal.
DIE_WITH_PARENT = _die_with_parent if sys.platform.startswith("linux") else None


class _PopenDyingWithParent:
    """``subprocess`` as Prefect's ephemeral server module sees it while it starts: Popen
    with :data:`DIE_WITH_PARENT`."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs):  # noqa: N802 — stands in for subprocess.Popen
        kwargs.setdefault("preexec_fn", DIE_WITH_PARENT)
        return subprocess.Popen(*args, **kwargs)


@contextmanager
def ephemeral_api(attempts: int = 2) -> Iterator[None]:
    """Prefect's ephemeral API — the local server its client starts when PREFECT_API_URL is
    unset — started here, so that the wait for it is bounded (its startup timeout, one retry)
    and ends in one clear line, and so that it ends with this process even on ``kill -9``
    (:data:`DIE_WITH_PARENT`, on Linux)."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    import prefect.server.api.server as prefect_server

    server = prefect_server.SubprocessASGIServer()
    for attempt in range(attempts):
        try:
            prefect_server.subprocess = _PopenDyingWithParent()
            server.start()
            break
        except Exception as exc:  # noqa: BLE001 — Prefect raises RuntimeError, httpx errors, …
            server.stop()
            if attempt == attempts - 1:
                reason = " ".join(str(exc).split())[:200]
                raise PrefectServerError(f"Prefect's local API did not start after {attempts} tries: {reason}") from None
        finally:
            prefect_server.subprocess = subprocess
    yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _flush_to_api(timeout: float = 15.0) -> None:
    """Deliver the events and logs this process still holds while the server is up (else
    Prefect retries them against a stopped server for minutes)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=timeout, at_exit=False)


@contextmanager
def prefect_api(ui: bool = False, timeout: float = 120.0) -> Iterator[str]:
    """Yield the API URL in use; a server started here is stopped (with its process group) on
    exit, and PREFECT_API_URL points at it meanwhile (child processes inherit it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = tempfile.mkdtemp(prefix="onnxlens-prefect-server-")
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off",
               "--ui" if ui else "--no-ui"]
    log = open(Path(home) / "server.log", "wb")  # noqa: SIM115 — kept open for the server's lifetime
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=DIE_WITH_PARENT)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (Path(home) / "server.log").read_text(errors="replace")[-300:]
                raise PrefectServerError(f"the local Prefect server did not start: {' '.join(tail.split())}")
            time.sleep(0.3)
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        _flush_to_api()
        os.environ.pop("PREFECT_API_URL", None)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
