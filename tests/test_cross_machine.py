"""Writers that share nothing but the store URI (as processes on two machines would) against the
loopback S3 server: budgets hold in every committed version, counters are exact, pins hold
against another process's cleanup.

Each process gets its own HOME, cache and temp directory, so no lock file can be shared: whatever
keeps them apart has to live in the bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from s3_server import S3Server, s3_server  # noqa: F401 - fixture

import replaystore
from replaystore.errors import NotFoundError
from replaystore.store import Edit, VersionMovedError
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SAMPLE = 64  # an 8x8 uint8 image
BUDGET = 40 * SAMPLE

WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import replaystore

    uri, options, writer, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = replaystore.open(uri, options)
    buffer = store.exemplars("shared")
    memory = store.experiences()
    for r in range(rounds):
        images = np.full((10, 8, 8), r, dtype=np.uint8)
        buffer.add(writer * 100 + r, images, task_id=r, sample_ids=np.arange(10) + 1000 * (writer * 100 + r))
        memory.record_use(["a", "b", "a"], helpful=[True, True, False])
    """
)

PINNER = textwrap.dedent(
    """
    import json, sys
    import replaystore

    store = replaystore.open(sys.argv[1], json.loads(sys.argv[2]))
    with store.pin("t") as version:
        print(version, flush=True)
        sys.stdin.readline()  # hold the pin until the test says so
    """
)


def _machine(tmp_path: Path, name: str) -> dict[str, str]:
    """An environment with a home, cache and temp directory of its own."""
    home = tmp_path / name
    for sub in ("cache", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "TMPDIR": str(home / "tmp")}


def _run(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_budgeted_writers_on_two_machines_never_commit_a_version_over_budget(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    uri = f"s3://{s3_server.new_bucket()}/store"
    options = s3_server.storage_options
    store = replaystore.open(uri, options)
    store.exemplars("shared", budget=BUDGET, policy="fixed_per_class", memory_per_class=10, selector="random")
    memory = store.experiences()
    memory.upsert([{"experience_id": e, "when_to_use": f"When {e} happens", "content": f"Do {e}"} for e in ("a", "b")])

    writers, rounds = 3, 6
    procs = [_run(WRITER, uri, json.dumps(options), str(w), str(rounds), env=_machine(tmp_path, f"machine-{w}")) for w in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]

    history = store.versions("shared")
    adds = [v for v in history if v.rows > 0]
    assert len(adds) >= writers * rounds  # every add committed a version of its own
    for v in history:
        used = store.read("shared", version=v.version, columns=["nbytes"])["nbytes"]
        assert (pc.sum(used).as_py() or 0) <= BUDGET, f"version {v.version} holds {pc.sum(used)} B of a {BUDGET} B budget"
    buffer = store.exemplars("shared")
    assert buffer.budget()["exemplar_bytes"] <= BUDGET
    assert buffer.settings.classes == tuple(sorted(w * 100 + r for w in range(writers) for r in range(rounds)))  # no add was lost

    utility = dict(zip(*memory.get(["a", "b"]).select(["experience_id", "utility"]).to_pydict().values()))
    assert utility == {"a": writers * rounds, "b": writers * rounds}


def test_a_change_planned_on_an_old_version_is_refused_by_the_object_store(s3_server: S3Server) -> None:  # noqa: F811
    store = replaystore.open(f"s3://{s3_server.new_bucket()}/store", s3_server.storage_options)
    store.create_table("t", "exemplars")
    first = store.table("t")  # a handle on the version before another machine's append
    store.append("t", {"buffer": ["b"], "sample_id": [1], "class_id": [0], "task_id": [0], "rank": [1], "nbytes": [64]})
    with pytest.raises(VersionMovedError):  # one attempt: the change planned on the handle's version is refused
        first.atomically(lambda ds: (Edit(metadata={"x": "1"}), None), attempts=1)
    assert store.count("t") == 1 and b"x" not in (store.schema("t").metadata or {})


def test_a_pin_held_by_one_process_survives_cleanup_run_by_another(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    uri = f"s3://{s3_server.new_bucket()}/store"
    options = s3_server.storage_options
    store = replaystore.open(uri, options)
    row = {"buffer": ["b"], "sample_id": [0], "class_id": [0], "task_id": [0], "rank": [1], "nbytes": [64]}
    unpinned = store.append("t", row, kind="exemplars")
    pinned_before = store.append("t", {**row, "sample_id": [1]})
    reader = _run(PINNER, uri, json.dumps(options), env=_machine(tmp_path, "reader"))
    assert reader.stdout is not None and reader.stdin is not None
    pinned = int(reader.stdout.readline())
    assert pinned == pinned_before
    for i in range(2, 5):
        store.append("t", {**row, "sample_id": [i]})
    cleaner = _run(
        "import json, sys, datetime, replaystore; print(replaystore.open(sys.argv[1], json.loads(sys.argv[2])).cleanup('t', older_than=datetime.timedelta(0)))",
        uri,
        json.dumps(options),
        env=_machine(tmp_path, "cleaner"),
    )
    _out, err = cleaner.communicate(timeout=300)
    assert cleaner.returncode == 0, err[-3000:]
    kept = [v.version for v in store.versions("t")]
    assert pinned in kept and unpinned not in kept
    assert store.count("t", version=pinned) == 2
    with pytest.raises(NotFoundError):
        store.read("t", version=unpinned)
    reader.stdin.write("\n")
    reader.stdin.flush()
    reader.communicate(timeout=120)
    assert reader.returncode == 0
    assert not [t for t in store.tags("t") if t.startswith("pin-")]
    store.cleanup("t", older_than=timedelta(0))
    assert pinned not in [v.version for v in store.versions("t")]
