"""The store unchanged on an S3-compatible object store (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json
import multiprocessing as mp
from datetime import timedelta

import pytest
from conftest import run_cli
from s3_server import SECRET_KEY, S3Server, s3_server, s3_store  # noqa: F401 - fixtures

import replaystore
from replaystore.errors import NotFoundError, ValidationError


def rows(start: int, n: int, buffer: str = "b") -> dict:
    return {
        "buffer": [buffer] * n,
        "sample_id": list(range(start, start + n)),
        "class_id": [i % 3 for i in range(n)],
        "task_id": [0] * n,
        "rank": [1] * n,
        "nbytes": [64] * n,
    }


def test_versions_tags_restore_compact_cleanup_on_s3(s3_store: replaystore.Store) -> None:  # noqa: F811
    v1 = s3_store.append("exemplars", rows(0, 3))
    v2 = s3_store.append("exemplars", rows(3, 3))
    v3 = s3_store.merge("exemplars", rows(4, 4), on=["buffer", "sample_id"])
    v4 = s3_store.update("exemplars", {"rank": "rank + 1"}, where="sample_id < 2")
    v5 = s3_store.delete("exemplars", "sample_id = 0")
    assert v1 < v2 < v3 < v4 < v5
    assert s3_store.table_names() == ["exemplars"]
    assert [s3_store.count("exemplars", version=v) for v in (v1, v2, v3, v4, v5)] == [3, 6, 8, 8, 7]
    assert s3_store.read("exemplars", filter="sample_id = 1").column("rank").to_pylist() == [2]

    s3_store.tag("exemplars", v2, "after-task-1")
    restored = s3_store.restore("exemplars", "after-task-1")
    assert restored > v5
    assert sorted(s3_store.read("exemplars").column("sample_id").to_pylist()) == list(range(6))

    fragments = s3_store.compact("exemplars")["exemplars"]
    assert fragments["fragments_after"] <= fragments["fragments_before"]
    s3_store.cleanup("exemplars", older_than=timedelta(0))
    kept = [v.version for v in s3_store.versions("exemplars")]
    assert v2 in kept, "cleanup must keep the tagged version"
    assert s3_store.count("exemplars", version="after-task-1") == 6
    assert s3_store.count("exemplars") == 6


def test_pinned_version_survives_cleanup_on_s3(s3_store: replaystore.Store) -> None:  # noqa: F811
    v1 = s3_store.append("exemplars", rows(0, 2))
    with s3_store.pin("exemplars", v1) as pinned:
        s3_store.append("exemplars", rows(2, 2))
        s3_store.cleanup("exemplars", older_than=timedelta(0))
        assert s3_store.count("exemplars", version=pinned) == 2
    assert not [t for t in s3_store.tags("exemplars") if t.startswith("pin-")]


def test_bad_input_leaves_s3_table_unchanged(s3_store: replaystore.Store) -> None:  # noqa: F811
    s3_store.append("exemplars", rows(0, 2))
    before = [v.version for v in s3_store.versions("exemplars")]
    bad = rows(2, 2)
    bad["class_id"] = ["a", "b"]
    with pytest.raises(ValidationError, match="class_id"):
        s3_store.append("exemplars", bad)
    with pytest.raises(NotFoundError, match="no version or tag"):
        s3_store.read("exemplars", version=999)
    assert [v.version for v in s3_store.versions("exemplars")] == before
    assert s3_store.count("exemplars") == 2


def _s3_writer(uri: str, options: dict[str, str], worker: int, batches: int) -> None:
    store = replaystore.open(uri, options)
    for b in range(batches):
        store.append("exemplars", rows(b * 10, 10, buffer=f"w{worker}"))
    store.update("exemplars", {"rank": "rank + 1"}, where=f"buffer = 'w{worker}'")


def test_concurrent_writers_from_several_processes_on_s3(s3_server: S3Server) -> None:  # noqa: F811
    uri = f"s3://{s3_server.new_bucket()}/store"
    store = replaystore.open(uri, s3_server.storage_options)
    start = store.create_table("exemplars")
    workers, batches = 3, 4
    ctx = mp.get_context("spawn")  # Lance is not fork-safe
    procs = [ctx.Process(target=_s3_writer, args=(uri, s3_server.storage_options, w, batches)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    table = store.read("exemplars", columns=["buffer", "sample_id", "rank"])
    keys = list(zip(table.column("buffer").to_pylist(), table.column("sample_id").to_pylist()))
    assert len(keys) == len(set(keys)) == workers * batches * 10, "every appended row exactly once"
    assert set(table.column("rank").to_pylist()) == {2}, "every worker's update applied to all its rows"
    assert store.versions("exemplars")[-1].version == start + workers * (batches + 1), "one version per write"


def test_credentials_from_environment_reach_lance_and_never_land_in_files(
    s3_server: S3Server,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket()
    uri = f"s3://{bucket}/store"
    store = replaystore.open(uri)  # no storage options: Lance reads AWS_* from the environment
    store.append("exemplars", rows(0, 4))
    listed = json.loads(run_cli("--json", "tables", uri=uri, check=True).stdout)
    assert [(t["name"], t["rows"]) for t in listed] == [("exemplars", 4)]
    client = s3_server.client()
    for key in s3_server.objects(bucket):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert SECRET_KEY.encode() not in body, f"secret written into {key}"
