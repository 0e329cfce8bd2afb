"""`record_use` from several processes at once: every increment lands exactly once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import replaystore
from tests.conftest import ROOT

WORKER = textwrap.dedent(
    """
    import sys
    import replaystore

    uri, calls = sys.argv[1], int(sys.argv[2])
    memory = replaystore.open(uri).experiences()
    for _ in range(calls):
        memory.record_use(["a", "b", "a", "c"], helpful=[True, True, True, False])
    """
)


def test_concurrent_record_use_totals_are_exact(store: replaystore.Store) -> None:
    memory = store.experiences()
    memory.upsert(
        [
            {"experience_id": "a", "when_to_use": "When a test is flaky", "content": "Rerun it with the same seed"},
            {"experience_id": "b", "when_to_use": "When disk is full", "content": "Clean old versions first"},
            {"experience_id": "c", "when_to_use": "When a lock is held", "content": "Wait with a timeout"},
        ]
    )
    workers, calls = 4, 6
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, store.uri, str(calls)], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    rows = memory.get(["a", "b", "c"]).select(["experience_id", "utility", "freq"]).to_pylist()
    got = {r["experience_id"]: r["utility"] for r in rows}
    assert got == {"a": 2 * workers * calls, "b": workers * calls, "c": 0}
    assert {r["freq"] for r in rows} == {0}
    versions = [v.version for v in store.versions("experiences")]
    assert len(versions) >= workers * calls  # one commit per call
