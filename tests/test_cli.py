"""The CLI: human tables, --json, one-line errors and exit codes. The first two tests run the entry
point in a real subprocess once each; every other call goes through the same `main` in-process (a
subprocess pays the stack's imports: one to five seconds apiece here, 30 s for `demo`'s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

import replaystore
from replaystore.cli import main
from tests.conftest import run_cli

Cli = Callable[..., CompletedProcess[str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """`replaystore ARGS` in-process: exit code, stdout and stderr, like run_cli's."""

    def run(*args: str, uri: str | None = None, check: bool = False) -> CompletedProcess[str]:
        capsys.readouterr()
        code = main([*(["--uri", uri] if uri else []), *args])
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"{args} failed ({code}):\n{out}\n{err}")
        return CompletedProcess(list(args), code, out, err)

    return run


def test_init_tables_versions_tag_restore_compact(tmp_path: Path, cli: Cli) -> None:
    uri = str(tmp_path / "s")
    out = run_cli("init", uri, check=True).stdout
    assert "exemplars" in out and uri in out
    store = replaystore.open(uri)
    store.append("exemplars", {"buffer": ["b"] * 2, "sample_id": [1, 2], "class_id": [0, 1], "task_id": [0, 0], "rank": [1, 1], "nbytes": [8, 8]})
    store.append("exemplars", {"buffer": ["b"], "sample_id": [3], "class_id": [1], "task_id": [0], "rank": [2], "nbytes": [8]})

    listing = json.loads(cli("--json", "tables", uri=uri, check=True).stdout)
    ex = next(t for t in listing if t["name"] == "exemplars")
    assert (ex["kind"], ex["rows"], ex["version"]) == ("exemplars", 3, 3)
    assert ex["bytes"] > 0
    human = cli("tables", uri=uri, check=True).stdout.splitlines()
    assert human[0].split() == ["name", "kind", "rows", "bytes", "version", "fragments"]

    versions = json.loads(cli("--json", "versions", "exemplars", uri=uri, check=True).stdout)
    assert [(v["version"], v["rows"]) for v in versions] == [(1, 0), (2, 2), (3, 3)]
    assert "tagged exemplars version 2 as two" in cli("tag", "exemplars", "2", "two", uri=uri, check=True).stdout
    assert "new version 4" in cli("restore", "exemplars", "two", uri=uri, check=True).stdout
    assert store.count("exemplars") == 2

    stats = json.loads(cli("--json", "stats", "exemplars", uri=uri, check=True).stdout)
    assert stats["rows"] == 2 and stats["tags"] == {"two": 2} and stats["columns"]["class_id"] == "int64"
    compacted = json.loads(cli("--json", "compact", "exemplars", uri=uri, check=True).stdout)
    assert compacted == [{"table": "exemplars", "fragments_before": 1, "fragments_after": 1}]


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path, cli: Cli) -> None:
    uri = str(tmp_path / "s")
    cli("init", uri, check=True)
    proc = run_cli("stats", "nope", uri=uri)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: NotFoundError: unknown table 'nope' in store {uri}"
    assert "Traceback" not in proc.stderr
    proc = cli("restore", "exemplars", "42", uri=uri)
    assert proc.returncode == 1 and "no version or tag 42" in proc.stderr
    debug = cli("--debug", "stats", "nope", uri=uri)
    assert "Traceback" in debug.stderr
    bad = cli("tables", uri="ftp://x/y")
    assert bad.returncode == 1 and "unsupported store URI scheme 'ftp'" in bad.stderr


def test_demo_refuses_a_task_count_it_does_not_have_and_leaves_the_store_alone(tmp_path: Path, cli: Cli) -> None:
    uri = str(tmp_path / "store")
    store = replaystore.open(uri)
    store.append("digits-replay-task0", {"sample_id": [1], "task_id": [0], "class_id": [0]}, kind="task_samples")
    proc = cli("demo", "--small", "--tasks", "4", "--output", str(tmp_path / "out"), uri=uri)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: ValidationError: tasks: must be between 1 and 3, got 4"
    assert store.table_names() == ["digits-replay-task0"] and store.count("digits-replay-task0") == 1
    assert not (tmp_path / "out").exists()


LOCAL_MODE = """
import json, os
from replaystore.cli.prefect_home import private_prefect_home
with private_prefect_home() as home:
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    seen = {"home": home, "prefect_home": str(PREFECT_HOME.value()), "timeout": PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()}
seen["after"] = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")}
seen["home_left"] = os.path.exists(seen["home"]) if seen["home"] else None
print(json.dumps(seen))
"""


@pytest.mark.parametrize("user_timeout", [None, "45"])
def test_local_mode_gives_prefects_temporary_server_time_to_start_and_a_home_of_its_own(user_timeout: str | None) -> None:
    """What Prefect itself reads inside the block (a fresh interpreter: Prefect reads its settings at
    import): a private home, removed afterwards, and a startup timeout of 120 s unless the user set one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if user_timeout:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = user_timeout
    proc = subprocess.run([sys.executable, "-c", LOCAL_MODE], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["home"] and seen["prefect_home"] == seen["home"] and seen["home_left"] is False
    assert seen["timeout"] == int(user_timeout or 120)
    assert seen["after"] == {"PREFECT_HOME": None, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": user_timeout}
