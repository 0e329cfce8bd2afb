"""`replaystore experiences ...` end to end in subprocesses, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_experiences import TRAJECTORIES


@pytest.mark.slow
def test_distill_retrieve_export_refine_from_the_cli(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    trajectories = tmp_path / "trajectories.jsonl"
    trajectories.write_text("".join(json.dumps(t) + "\n" for t in TRAJECTORIES))
    out = run_cli("--json", "experiences", "distill", str(trajectories), "--workspace", "travel", "--dedup-threshold", "0.95", uri=uri, check=True)
    assert json.loads(out.stdout)["added"] == 3
    assert out.stderr == ""  # no "Loading weights" bar, no library warnings: stderr holds the command's own messages
    hits = json.loads(run_cli("--json", "experiences", "retrieve", "cheap flight booking", "--workspace", "travel", "-k", "2", uri=uri, check=True).stdout)
    assert len(hits) == 2 and all(h["freq"] == 1 for h in hits) and hits[0]["similarity"] >= hits[1]["similarity"]
    dump = tmp_path / "dump.jsonl"
    run_cli("experiences", "export", str(dump), uri=uri, check=True)
    assert len(dump.read_text().splitlines()) == 3
    refined = json.loads(run_cli("--json", "experiences", "refine", "--freq-threshold", "1", uri=uri, check=True).stdout)
    assert sorted(r["experience_id"] for r in refined) == sorted(h["experience_id"] for h in hits)
    bad = run_cli("experiences", "retrieve", "x", "--where", "1=1) OR (1=1", uri=uri)
    assert bad.returncode != 0 and "where" in bad.stderr
