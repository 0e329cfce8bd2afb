"""A local Prefect server for serving without one configured (and for the integration tests).

Prefect's temporary server runs in the caller's process group, so a terminal Ctrl-C kills it at
the same moment as the runner, which then hangs pausing its deployments against a dead API. This
server runs in its own session: the runner shuts down cleanly first, then the server is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
from prefect.settings import PREFECT_API_URL, temporary_settings

STARTUP_TIMEOUT_S = 120.0  # a loaded machine can take far longer than Prefect's default 20 s
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode} before it was healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"prefect server at {url} was not healthy after {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def local_server(port: int | None = None, timeout: float = STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Run `prefect server start` (sqlite under $PREFECT_HOME) until the block ends; yields its API URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--analytics-off"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_healthy(url, process, timeout)
        yield url
    finally:
        _stop(process)


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The configured Prefect API (`PREFECT_API_URL`), else a local server for this block."""
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    with local_server() as url, temporary_settings({PREFECT_API_URL: url}):
        yield url
