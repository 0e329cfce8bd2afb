"""Deployments for real: a local Prefect server, `prefect deploy --all` from deploy/prefect.yaml, a
process worker running a deployment to completion, and `replaystore serve` stopped by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

import replaystore
from replaystore.flows.deployments import deployment_specs
from replaystore.flows.server import local_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture
def prefect_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private PREFECT_HOME (its own sqlite database) for the server, the CLI and the worker."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")  # the served runner picks a new run up in ~1 s, not ~10 s
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return dict(os.environ)


def filled_store(path: Path) -> replaystore.Store:
    store = replaystore.open(str(path))
    for i in range(4):
        store.append("priorities", {"source": ["digits"], "sample_id": [str(i)], "priority": [float(i)]})
    return store


def expected_schedules() -> dict[str, list[str]]:
    return {f"{s['entrypoint'].rpartition('.')[2]}/{s['name']}": [x["cron"] for x in s.get("schedules") or []] for s in deployment_specs()}


def served_deployments(url: str) -> dict[str, Any]:
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        return {f"{flows[d.flow_id]}/{d.name}": d for d in client.read_deployments()}


def wait_for_run(url: str, deployment_id: Any, parameters: dict[str, Any], polls: int, run: Any = None) -> Any:
    """Create a run of the deployment; `run(...)` (if given) executes it; read its state until it is
    final, at most `polls` times a second apart (a count of reads, not a deadline: a slow machine
    takes more of them, and the count only bounds a run that never ends)."""
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
        if run is not None:
            run()
        for _ in range(polls):
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                return state
            time.sleep(1)
    raise AssertionError(f"flow run {flow_run.id} was not final after {polls} reads of its state")


def test_deploy_all_and_a_process_worker_runs_prune(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    store = filled_store(tmp_path / "store")
    with local_server() as url:
        env = {**prefect_env, "PREFECT_API_URL": url}
        setup = subprocess.run(["bash", "deploy/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        deployments = served_deployments(url)
        assert {name: [s.schedule.cron for s in d.schedules] for name, d in deployments.items()} == expected_schedules()
        assert {d.work_pool_name for d in deployments.values()} == {"replaystore"}

        def worker() -> None:
            cmd = ["prefect", "worker", "start", "--pool", "replaystore", "--run-once"]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr

        state = wait_for_run(url, deployments["prune/prune-nightly"].id, {"store_uri": store.uri, "retention_hours": 0}, polls=120, run=worker)
    assert state.is_completed(), state
    assert store.info("priorities").fragments == 1
    assert [v.rows for v in store.versions("priorities")] == [4]


def _read_lines(stream: Any, lines: list[str], served: threading.Event) -> None:
    for line in stream:
        lines.append(line)
        if "being served" in line:
            served.set()
    served.set()  # the output ended: the server exited, which the waiting test reports


def test_serve_runs_every_deployment_on_schedule_and_stops_on_ctrl_c(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    store = filled_store(tmp_path / "store")
    proc = subprocess.Popen(
        [str(BIN / "replaystore"), "--uri", store.uri, "serve"],
        cwd=tmp_path,
        env=prefect_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    served = threading.Event()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines, served), daemon=True).start()
    try:
        served.wait()  # the server's own output says when it serves (or ends, when it failed to start)
        assert proc.poll() is None and any("being served" in line for line in lines), "".join(lines)
        url = re.search(r"http://127\.0\.0\.1:\d+", "".join(lines)).group(0) + "/api"  # type: ignore[union-attr]
        deployments = served_deployments(url)
        assert {name: [s.schedule.cron for s in d.schedules] for name, d in deployments.items()} == expected_schedules()
        assert all(d.parameters["store_uri"] == store.uri for d in deployments.values())
        state = wait_for_run(url, deployments["index/index-hourly"].id, {}, polls=180)
        assert state.is_completed(), "".join(lines)
        assert {tuple(d.field_names) for d in store.dataset("priorities").describe_indices()} == {("sample_id",), ("source",)}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(lines)
    assert any("stopped serving" in line for line in lines), "".join(lines)
