"""The store on real Lance tables: open, versions, tags, restore, maintenance, races, migration."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from datetime import timedelta
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from lance.file import LanceFileReader

import replaystore
from replaystore import schemas
from replaystore.errors import NotFoundError, SchemaOutdatedError, StoreURIError, TableNameError, ValidationError
from replaystore.store import PAGE_BYTES, Edit


def rows(start: int, n: int, buffer: str = "b") -> dict:
    return {
        "buffer": [buffer] * n,
        "sample_id": list(range(start, start + n)),
        "class_id": [i % 3 for i in range(n)],
        "task_id": [0] * n,
        "rank": [1 + i for i in range(n)],
        "nbytes": [64] * n,
    }


def test_default_uri_is_local_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPLAYSTORE_URI", raising=False)
    store = replaystore.open()
    assert store.uri == str(tmp_path / "replaystore-data")
    store.append("exemplars", rows(0, 2))
    assert (tmp_path / "replaystore-data" / "exemplars.lance").is_dir()


def test_env_uri_and_explicit_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYSTORE_URI", str(tmp_path / "from-env"))
    assert replaystore.open().uri == str(tmp_path / "from-env")
    assert replaystore.open(str(tmp_path / "explicit")).uri == str(tmp_path / "explicit")
    assert replaystore.open(f"file://{tmp_path}/f").uri == str(tmp_path / "f")


@pytest.mark.parametrize("uri", ["", "ftp://host/x", "s3://", "s3:///nobucket", "://x"])
def test_malformed_uris_refused(uri: str) -> None:
    with pytest.raises(StoreURIError):
        replaystore.open(uri) if uri else replaystore.Store(uri)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x" * 200, "sp ace", "a\\b"])
def test_bad_table_names_refused(store: replaystore.Store, name: str) -> None:
    with pytest.raises(TableNameError, match="not allowed"):
        store.append(name, rows(0, 1), kind="exemplars")
    assert store.table_names() == []


def test_named_tables_of_a_kind(store: replaystore.Store) -> None:
    store.create_table("cifar-exemplars", kind="exemplars")
    store.append("cifar-exemplars", rows(0, 3))
    assert store.kind("cifar-exemplars") == "exemplars"
    assert store.table_names() == ["cifar-exemplars"]
    with pytest.raises(ValidationError, match="already exists with kind 'exemplars'"):
        store.create_table("cifar-exemplars", kind="experiences")
    with pytest.raises(NotFoundError, match="unknown table kind"):
        store.create_table("t", kind="nonsense")


def test_every_write_is_a_version_and_old_versions_read_back(store: replaystore.Store) -> None:
    v1 = store.append("exemplars", rows(0, 3))
    v2 = store.append("exemplars", rows(3, 2))
    v3 = store.delete("exemplars", "sample_id < 2")
    v4 = store.update("exemplars", {"rank": "rank + 10"}, where="sample_id = 4")
    assert v1 < v2 < v3 < v4
    assert [v.version for v in store.versions("exemplars")][-4:] == [v1, v2, v3, v4]
    assert store.count("exemplars", version=v1) == 3
    assert store.count("exemplars", version=v2) == 5
    assert store.count("exemplars") == 3
    assert store.read("exemplars", filter="sample_id = 4").column("rank").to_pylist() == [12]
    assert sorted(store.read("exemplars", version=v2, columns=["sample_id"]).column(0).to_pylist()) == [0, 1, 2, 3, 4]
    with pytest.raises(NotFoundError, match="no version or tag 999"):
        store.read("exemplars", version=999)
    with pytest.raises(NotFoundError, match="unknown table 'missing'"):
        store.read("missing")


def test_tag_restore_and_undo(store: replaystore.Store) -> None:
    v1 = store.append("exemplars", rows(0, 3))
    store.tag("exemplars", v1, "before-prune")
    store.delete("exemplars", "class_id = 0")
    assert store.count("exemplars") == 2
    v_restored = store.restore("exemplars", "before-prune")
    assert store.count("exemplars") == 3
    assert store.versions("exemplars")[-1].version == v_restored
    store.restore("exemplars", v_restored - 1)  # restore is itself undoable
    assert store.count("exemplars") == 2
    assert store.tags("exemplars") == {"before-prune": v1}
    with pytest.raises(ValidationError, match="already exists"):
        store.tag("exemplars", v1, "before-prune")
    with pytest.raises(NotFoundError):
        store.tag("exemplars", 999, "nope")


def test_compaction_merges_fragments_and_keeps_rows(store: replaystore.Store) -> None:
    for i in range(6):
        store.append("exemplars", rows(i * 10, 10))
    assert store.info("exemplars").fragments == 6
    result = store.compact("exemplars")
    assert result["exemplars"] == {"fragments_before": 6, "fragments_after": 1}
    assert sorted(store.read("exemplars", columns=["sample_id"]).column(0).to_pylist()) == list(range(60))


def _wide_rows(start: int, n: int) -> pa.Table:
    """Exemplar rows of 4 KB each (1,024 float features)."""
    features = np.random.default_rng(start).standard_normal(n * 1024, dtype=np.float32)
    return pa.table({
        **rows(start, n),
        "features": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 1024), pa.array(features)),
    })  # fmt: skip


def _pages(store: replaystore.Store, name: str, column: str) -> list[int]:
    """Pages of `column` in each data file of the latest version."""
    folder = Path(store.table_uri(name)) / "data"
    index = store.schema(name).names.index(column)
    files = [f.path for frag in store.dataset(name).get_fragments() for f in frag.data_files()]
    return [len(LanceFileReader(str(folder / f)).metadata().columns[index].pages) for f in files]


def test_a_large_append_leaves_pages_a_scan_can_stream(store: replaystore.Store) -> None:
    data = _wide_rows(0, 10_000)  # ~41 MB in one call
    store.append("exemplars", data)
    pages = _pages(store, "exemplars", "features")
    assert len(pages) == 1 and pages[0] >= 41 * 1024 * 1024 // PAGE_BYTES // 2  # not one 41 MB page
    scanned = store.dataset("exemplars").to_table(columns=["sample_id", "features"])
    assert scanned.column("sample_id").to_pylist() == list(range(10_000))
    assert scanned.column("features").equals(data.column("features"))


def test_cleanup_keeps_tagged_and_pinned_versions(store: replaystore.Store) -> None:
    v1 = store.append("exemplars", rows(0, 1))
    store.tag("exemplars", v1, "keep")
    v2 = store.append("exemplars", rows(1, 1))
    with store.pin("exemplars", v2) as pinned:
        store.append("exemplars", rows(2, 1))
        store.append("exemplars", rows(3, 1))
        removed = store.cleanup("exemplars", older_than=timedelta(0))["exemplars"]
        assert removed["versions_removed"] >= 1
        kept = {v.version for v in store.versions("exemplars")}
        assert {v1, pinned} <= kept
        assert store.count("exemplars", version=pinned) == 2
    assert store.tags("exemplars") == {"keep": v1}
    assert store.count("exemplars", version="keep") == 1


def test_cleanup_drops_pins_a_dead_reader_left_and_keeps_live_ones(store: replaystore.Store) -> None:
    old = store.append("exemplars", rows(0, 1))
    live = store.append("exemplars", rows(1, 1))
    store.append("exemplars", rows(2, 1))
    ds = store.dataset("exemplars")
    ds.tags.create("pin-20260101t000000-deadbeef", old)  # what a reader killed mid-epoch long ago leaves
    ds.tags.create("pin-0123456789ab", old)  # a pin from before pins carried their time: kept
    with store.pin("exemplars", live):
        kept = store.cleanup("exemplars", older_than=timedelta(0), stale_pins=None)["exemplars"]
        assert kept["stale_pins_removed"] == 0 and old in {v.version for v in store.versions("exemplars")}
        dropped = store.cleanup("exemplars", older_than=timedelta(0))["exemplars"]
        assert dropped["stale_pins_removed"] == 1  # the timed pin; the untimed one still holds `old`
        assert old in {v.version for v in store.versions("exemplars")}
        store.untag("exemplars", "pin-0123456789ab")
        store.cleanup("exemplars", older_than=timedelta(0))
        versions = {v.version for v in store.versions("exemplars")}
        assert old not in versions and live in versions  # the dead reader's version went, the live pin held
        assert store.count("exemplars", version=live) == 2
    assert store.tags("exemplars") == {}


def test_a_pin_carries_the_time_it_was_taken(store: replaystore.Store) -> None:
    v = store.append("exemplars", rows(0, 1))
    with store.pin("exemplars", v):
        [pin] = store.tags("exemplars")
        assert store.cleanup("exemplars", stale_pins=timedelta(hours=1))["exemplars"]["stale_pins_removed"] == 0
        assert store.cleanup("exemplars", stale_pins=timedelta(0))["exemplars"]["stale_pins_removed"] == 1
        assert store.tags("exemplars") == {}
    assert pin.startswith("pin-")


def test_pin_names_are_reserved(store: replaystore.Store) -> None:
    v = store.append("exemplars", rows(0, 1))
    with pytest.raises(ValidationError, match="reserved"):
        store.tag("exemplars", v, "pin-20260101t000000-mine")
    assert store.tags("exemplars") == {}


def test_merge_upserts_in_one_version(store: replaystore.Store) -> None:
    store.append("priorities", {"source": ["t", "t"], "sample_id": ["a", "b"], "priority": [1.0, 2.0]})
    v = store.merge("priorities", {"source": ["t", "t"], "sample_id": ["b", "c"], "priority": [5.0, 3.0]}, on=["source", "sample_id"])
    got = dict(zip(*store.read("priorities", columns=["sample_id", "priority"]).to_pydict().values()))
    assert got == {"a": 1.0, "b": 5.0, "c": 3.0}
    assert store.versions("priorities")[-1].version == v


def test_update_unknown_column_refused(store: replaystore.Store) -> None:
    store.append("exemplars", rows(0, 1))
    with pytest.raises(ValidationError, match="colour: unknown column"):
        store.update("exemplars", {"colour": "1"})


def test_an_older_table_opens_as_stored_and_migrate_adds_the_new_columns(store: replaystore.Store) -> None:
    spec = schemas.load_spec("exemplars")
    full = spec.arrow_schema()
    old_fields = [f for f in full if f.name not in {"tokens", "features"}]
    meta = dict(full.metadata)
    meta[schemas.VERSION_KEY] = b"0"
    old_schema = pa.schema(old_fields, metadata=meta)
    old = schemas.conform({k: v for k, v in rows(0, 2).items()}, old_schema, kind="exemplars")
    lance.write_dataset(old, store.table_uri("exemplars"))
    ds = store.dataset("exemplars")
    assert not {"tokens", "features"} & set(ds.schema.names), "opening never migrates"
    assert [v.version for v in store.versions("exemplars")] == [1]
    with pytest.raises(SchemaOutdatedError, match="replaystore migrate exemplars"):
        store.append("exemplars", rows(2, 1) | {"features": [[1.0, 2.0]]})
    done = store.migrate("exemplars")["exemplars"]
    assert (done.schema_before, done.schema_after, set(done.added)) == (0, spec.schema_version, {"tokens", "features"})
    assert store.count("exemplars") == 2
    assert store.read("exemplars", columns=["features"]).column(0).null_count == 2
    store.append("exemplars", rows(2, 1) | {"features": [[1.0, 2.0]]})
    assert store.count("exemplars") == 3
    again = store.migrate()["exemplars"]
    assert (again.added, again.version) == ((), store.versions("exemplars")[-1].version), "a current table gets no new version"


def _append_worker(uri: str, worker: int, batches: int) -> None:
    store = replaystore.open(uri)
    for b in range(batches):
        store.append("exemplars", rows(worker * 10_000 + b * 10, 10, buffer=f"w{worker}"))


def test_concurrent_appends_from_processes_lose_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    workers, batches = 4, 8
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_worker, args=(uri, w, batches)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ids = replaystore.open(uri).read("exemplars", columns=["sample_id"]).column(0).to_pylist()
    assert len(ids) == workers * batches * 10
    assert len(set(ids)) == len(ids)


def test_a_table_keeps_the_file_format_its_schema_file_names(store: replaystore.Store) -> None:
    store.create_table("experiences", params={"embedding_dim": 4})
    row = {"experience_id": ["e"], "workspace": ["w"], "kind": ["insight"], "when_to_use": ["x"], "content": ["y"], "embedding": [[1.0, 0, 0, 0]]}
    for i in range(3):
        store.append("experiences", {**row, "experience_id": [f"e{i}"]})
    store.merge("experiences", {**row, "experience_id": ["e0"], "content": ["z"]}, on="experience_id")
    store.compact("experiences")
    ds = store.dataset("experiences")
    assert ds.data_storage_version == schemas.load_spec("experiences").data_storage_version == "2.1"
    assert {(f.file_major_version, f.file_minor_version) for frag in ds.get_fragments() for f in frag.metadata.files} == {(2, 1)}
    assert store.count("experiences") == 3


def _exemplar_rows(ids: list[int], class_id: int = 0) -> dict:
    n = len(ids)
    return {"buffer": ["b"] * n, "sample_id": ids, "class_id": [class_id] * n, "task_id": [0] * n, "rank": list(range(1, n + 1)), "nbytes": [64] * n}


def test_atomically_commits_cuts_inserts_and_metadata_as_one_version_keeping_indexes(store) -> None:
    store.append("t", _exemplar_rows([1, 2, 3]), kind="exemplars")
    store.append("t", _exemplar_rows([4, 5], class_id=1))
    store.dataset("t").create_scalar_index("sample_id", "BTREE")
    before = store.dataset("t").version
    version, result = store.atomically("t", lambda ds: (Edit(delete="rank > 1", insert=pa.table(_exemplar_rows([9], 2)), metadata={"k": "v"}), ds.version))
    assert result == before and version == before + 1
    assert sorted(store.read("t")["sample_id"].to_pylist()) == [1, 4, 9]
    assert store.schema("t").metadata[b"k"] == b"v" and store.dataset("t").describe_indices()


def test_atomically_rewrites_a_fragment_it_empties(store) -> None:
    store.append("t", _exemplar_rows([1, 2]), kind="exemplars")
    store.append("t", _exemplar_rows([3, 4], class_id=1))
    store.atomically("t", lambda ds: (Edit(delete="class_id = 0 OR sample_id = 4"), None))
    assert store.read("t")["sample_id"].to_pylist() == [3]


def test_atomically_plans_again_when_another_writer_committed_in_between(store) -> None:
    store.append("t", _exemplar_rows([1]), kind="exemplars")
    seen: list[int] = []

    def plan(ds):
        seen.append(ds.count_rows())
        if len(seen) == 1:
            store.append("t", _exemplar_rows([2]))  # lands after this plan read its version
        return Edit(insert=pa.table(_exemplar_rows([100 + len(seen)]))), None

    store.atomically("t", plan)
    assert seen == [1, 2] and sorted(store.read("t")["sample_id"].to_pylist()) == [1, 2, 102]


def test_a_plan_that_raises_writes_nothing(store) -> None:
    store.append("t", _exemplar_rows([1]), kind="exemplars")
    versions = store.versions("t")

    def refuse(ds):
        raise ValidationError("budget", "over")

    with pytest.raises(ValidationError):
        store.atomically("t", refuse)
    assert store.versions("t") == versions


def test_a_store_sees_what_another_store_committed_though_each_caches_what_it_opened(tmp_path: Path) -> None:
    """Each Store keeps one Lance session (manifest and footer caches): another writer's commits,
    even a table dropped and written again up to the same version number, are seen at the next open."""
    mine, theirs = replaystore.open(str(tmp_path)), replaystore.open(str(tmp_path))
    mine.append("exemplars", rows(0, 3, buffer="old"))
    assert (mine.count("exemplars"), mine.dataset("exemplars").version) == (3, 2)
    theirs.append("exemplars", rows(3, 2, buffer="old"))
    assert mine.count("exemplars") == 5
    theirs.drop("exemplars")
    theirs.append("exemplars", rows(0, 1, buffer="new"))  # created and appended: version 2 again
    assert mine.dataset("exemplars").version == 2
    assert mine.read("exemplars", columns=["buffer"]).column("buffer").to_pylist() == ["new"]
    mine.append("exemplars", rows(1, 1, buffer="new"))
    assert theirs.read("exemplars", columns=["buffer"]).column("buffer").to_pylist() == ["new", "new"]
    copied = pickle.loads(pickle.dumps(mine))  # the session stays behind; the copy opens its own
    assert copied.count("exemplars") == 2
