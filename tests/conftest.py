"""Shared fixtures: a fresh on-disk store per test, one Prefect test server per session, and a
subprocess runner for the CLI.

The `slow` marker covers every test that starts a server or a cluster: the quick loop
(`pytest -m "not slow"`) starts none. `pytest_collection_modifyitems` below adds `slow` to every
test that uses one of SERVER_FIXTURES (directly, through another fixture, or through
`pytest.mark.usefixtures`), so a new test on those fixtures cannot forget it. Tests that start a
server or cluster without these fixtures (a spawned moto server, the demo, several spawned
interpreters) carry `@pytest.mark.slow` themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import replaystore

ROOT = Path(__file__).resolve().parent.parent

# Fixtures that start a server or a cluster: Prefect's test server (here), moto's S3 server
# (tests/s3_server.py), a local Ray instance (tests/test_stream_ray.py) and a two-node Ray cluster
# (tests/test_scaleout.py).
SERVER_FIXTURES = frozenset({"prefect_harness", "s3_server", "s3_store", "ray_cluster", "two_nodes"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def store(tmp_path: Path) -> replaystore.Store:
    return replaystore.open(str(tmp_path / "store"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test server (its own temporary database), started once: it takes 10-20 s to come up.
    It sets Prefect's in-process settings only; subprocesses see no change."""
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}), prefect_test_harness(server_startup_timeout=120):
        yield


def run_cli(*args: str, uri: str | None = None, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `replaystore` entry point exactly as a user would."""
    cmd = [sys.executable, "-m", "replaystore.cli", *(["--uri", uri] if uri else []), *args]
    env = {**os.environ, "LANCE_LOG": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
