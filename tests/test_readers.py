"""Readers never write: every read path leaves a table with an older schema exactly as it was (its
versions, tags and files); a read that needs a column the old schema lacks says so in one line naming
`replaystore migrate`; only explicit calls migrate (Store.migrate, `replaystore migrate`, `init`)."""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest

import replaystore
from replaystore import schemas
from replaystore.cli import main
from replaystore.errors import SchemaOutdatedError
from replaystore.stream import ReplayStream, Source

MIGRATE = "run 'replaystore migrate {table}' (or Store.migrate('{table}'))"


class Words:
    """A deterministic bag-of-words embedder: retrieval without loading a model."""

    name, dim = "words", 16

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.dim), 1e-3, np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def exemplar_rows(n: int, start: int = 0) -> dict[str, Any]:
    return {
        "buffer": ["b"] * n, "sample_id": list(range(start, start + n)), "class_id": [i % 3 for i in range(n)],
        "task_id": [0] * n, "rank": [1] * n, "nbytes": [4] * n,
    }  # fmt: skip


def outdate(store: replaystore.Store, table: str, drop: set[str]) -> None:
    """Rewrite `table` as an older replaystore left it: without `drop`, one schema version back."""
    current = store.read(table)
    kind = schemas.kind_of(current.schema)
    assert kind is not None
    kept = [f for f in current.schema if f.name not in drop]
    meta = dict(current.schema.metadata)
    meta[schemas.VERSION_KEY] = str(schemas.load_spec(kind).schema_version - 1).encode()
    old = current.select([f.name for f in kept]).cast(pa.schema(kept, metadata=meta))
    lance.write_dataset(old, store.table_uri(table), mode="overwrite")


def state(store: replaystore.Store) -> tuple[dict[str, Any], list[str]]:
    """Every table's versions and tags, and every file under the store (lock files aside)."""
    root = Path(store.uri)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "_locks")
    return {t: (store.versions(t), store.tags(t)) for t in store.table_names()}, files


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> replaystore.Store:
    """Three tables an older replaystore wrote: plain exemplars lacking the nullable `tokens` and
    `features`, an exemplar buffer lacking the defaulted `added_at`, experiences lacking the nullable
    `confidence` and `source_ids`; each tagged."""
    store = replaystore.open(str(tmp_path_factory.mktemp("readers") / "store"))
    store.append("exemplars", exemplar_rows(30))
    outdate(store, "exemplars", {"tokens", "features"})
    buffer = store.exemplars("buf", budget=10_000, selector="random")
    for c in range(2):
        buffer.add(c, np.full((4, 2, 2), c, np.uint8))
    outdate(store, "buf", {"added_at"})
    memory = store.experiences("experiences", embedder=Words())
    memory.upsert(  # no dedup: this embedder is too coarse for it
        [
            {"when_to_use": "when a migration locks a table", "content": "run it in batches"},
            {"when_to_use": "when tests are flaky", "content": "remove the wall clock"},
            {"when_to_use": "when a stream is slow", "content": "read contiguous rows"},
        ]
    )
    outdate(store, "experiences", {"confidence", "source_ids"})
    for table in ("exemplars", "buf", "experiences"):
        assert store.schema_gap(table) is not None
        store.tag(table, store.versions(table)[-1].version, "old")
    return store


def _read(store: replaystore.Store) -> None:
    assert store.read("exemplars").num_rows == 30
    assert "features" not in store.read("exemplars").column_names  # reads see the columns it stores
    assert store.read("exemplars", columns=["sample_id"], filter="class_id = 1").num_rows == 10
    assert store.read("exemplars", version="old").num_rows == 30


def _count(store: replaystore.Store) -> None:
    assert store.count("exemplars") == 30 and store.count("exemplars", filter="class_id = 2") == 10


def _dataset(store: replaystore.Store) -> None:
    for table in store.table_names():
        assert store.dataset(table).schema == store.schema(table)


def _stats_info(store: replaystore.Store) -> None:
    stats = store.stats("exemplars")
    assert stats["schema_version"] == schemas.load_spec("exemplars").schema_version - 1 and stats["rows"] == 30
    assert store.info("experiences").rows == 3


def _versions_tags(store: replaystore.Store) -> None:
    assert store.versions("exemplars")[-1].tags == ("old",)
    assert store.tags("buf") == {"old": store.versions("buf")[-1].version}
    gap = store.schema_gap("experiences")
    assert gap is not None and set(gap.missing) == {"confidence", "source_ids"}


def _sql(store: replaystore.Store) -> None:
    query = "SELECT e.class_id, COUNT(*) AS n FROM exemplars e JOIN buf b ON e.sample_id = b.sample_id GROUP BY 1 ORDER BY 1"
    assert store.sql(query).height > 0
    assert store.sql_arrow("SELECT COUNT(*) AS n FROM experiences").column("n").to_pylist() == [3]
    assert sum(b.num_rows for b in store.sql_batches("SELECT sample_id FROM exemplars", batch_rows=7)) == 30


def _stream(store: replaystore.Store) -> None:
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id", "class_id"]), 8)
    ids = [int(i) for batch in stream for i in batch["sample_id"]]
    assert sorted(ids) == list(range(30))


def _retrieve(store: replaystore.Store) -> None:
    memory = store.experiences("experiences", embedder=Words())
    hits = memory.retrieve("a migration locks the table", record=False)
    assert hits["when_to_use"][0].as_py() == "when a migration locks a table"
    assert memory.search(Words().embed(["flaky tests"])[0], "default", k=1).num_rows == 1
    assert memory.get([hits["experience_id"][0].as_py()]).num_rows == 1


def _exemplars(store: replaystore.Store) -> None:
    buffer = store.exemplars("buf")
    assert buffer.budget()["rows"] == 8
    assert sorted(buffer.samples().labels.tolist()) == [0] * 4 + [1] * 4


def _cli(store: replaystore.Store) -> None:
    for args in (["tables"], ["stats", "experiences"], ["versions", "buf"], ["sql", "SELECT COUNT(*) AS n FROM exemplars"]):
        assert main(["--uri", store.uri, "--json", *args]) == 0


READS: dict[str, Callable[[replaystore.Store], None]] = {
    f.__name__.strip("_"): f for f in (_read, _count, _dataset, _stats_info, _versions_tags, _sql, _stream, _retrieve, _exemplars, _cli)
}


@pytest.mark.parametrize("path", list(READS))
def test_a_read_path_leaves_an_older_table_unchanged(old_store: replaystore.Store, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = state(old_store)
    READS[path](old_store)
    assert state(old_store) == before, f"{path} wrote to the store"


def test_a_read_that_needs_a_missing_column_names_the_migrate_command(old_store: replaystore.Store, capsys: pytest.CaptureFixture[str]) -> None:
    before = state(old_store)
    line = MIGRATE.format(table="exemplars")
    reads: list[Callable[[], Any]] = [
        lambda: old_store.read("exemplars", columns=["sample_id", "features"]),
        lambda: old_store.count("exemplars", filter="tokens IS NULL"),
        lambda: old_store.sql("SELECT sample_id, features FROM exemplars"),
        lambda: old_store.sql_batches("SELECT sample_id FROM exemplars WHERE tokens IS NOT NULL"),
        lambda: Source.from_store(old_store, "exemplars", columns=["sample_id", "features"]),
    ]
    for read in reads:
        with pytest.raises(SchemaOutdatedError) as err:
            read()
        assert str(err.value) == (
            f"table 'exemplars' has schema v{schemas.load_spec('exemplars').schema_version - 1}, this replaystore needs "
            f"v{schemas.load_spec('exemplars').schema_version} (adds columns tokens, features): {line}"
        )
    memory = old_store.experiences("experiences", embedder=Words())
    with pytest.raises(SchemaOutdatedError, match="adds columns confidence, source_ids"):
        memory.retrieve("flaky tests", record=False, columns=["content", "confidence"])
    capsys.readouterr()
    assert main(["--uri", old_store.uri, "sql", "SELECT features FROM exemplars"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err
    assert old_store.read("exemplars", version="old", columns=["sample_id"]).num_rows == 30  # an old version is just read
    assert state(old_store) == before


def test_writes_to_an_older_table_refuse_until_migrate(store: replaystore.Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.append("exemplars", exemplar_rows(6))
    outdate(store, "exemplars", {"tokens", "features"})
    before = state(store)
    writes: list[Callable[[], Any]] = [
        lambda: store.append("exemplars", exemplar_rows(2, 100)),
        lambda: store.merge("exemplars", exemplar_rows(2, 0), on=["buffer", "sample_id"]),
        lambda: store.update("exemplars", {"rank": "rank + 1"}),
        lambda: store.delete("exemplars", "sample_id = 0"),
    ]
    for write in writes:
        with pytest.raises(SchemaOutdatedError, match=MIGRATE.format(table="exemplars").replace("(", r"\(").replace(")", r"\)")):
            write()
    assert state(store) == before
    capsys.readouterr()
    assert main(["--uri", store.uri, "--json", "migrate", "exemplars"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["table"], r["added columns"]) for r in report] == [("exemplars", "tokens, features")]
    assert store.schema_gap("exemplars") is None
    assert store.append("exemplars", exemplar_rows(2, 100) | {"features": [[1.0], [2.0]]}) > before[0]["exemplars"][0][-1].version
    assert store.count("exemplars", filter="features IS NULL") == 6
    after = state(store)
    assert main(["--uri", store.uri, "migrate"]) == 0
    assert state(store) == after, "migrating current tables writes nothing"


def test_init_migrates_older_tables(store: replaystore.Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.append("exemplars", exemplar_rows(3))
    outdate(store, "exemplars", {"features"})
    capsys.readouterr()
    assert main(["--uri", store.uri, "--json", "init"]) == 0
    assert json.loads(capsys.readouterr().out)["migrated"] == ["exemplars"]
    assert store.schema_gap("exemplars") is None and store.count("exemplars", filter="features IS NULL") == 3


def test_a_stream_with_pin_false_takes_no_pin(store: replaystore.Store, caplog: pytest.LogCaptureFixture) -> None:
    store.append("exemplars", exemplar_rows(30))
    for pin, pinned in ((True, True), (False, False)):
        stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id"], pin=pin), 8)
        it = iter(stream)
        next(it)
        assert any(t.startswith("pin-") for t in store.tags("exemplars")) == pinned
        rest = list(it)
        assert len(rest) == 3 and any(t.startswith("pin-") for t in store.tags("exemplars")) == pinned  # kept: still the latest
        stream.close()
        assert not store.tags("exemplars")
    assert not [r for r in caplog.records if r.name == "replaystore" and r.levelno >= logging.WARNING]


def test_opening_and_listing_a_store_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    """A mistyped URI must not leave a store folder behind: the folder appears with the first table."""
    store = replaystore.open(str(tmp_path / "typo"))
    assert store.table_names() == [] and not store.exists("exemplars")
    assert not (tmp_path / "typo").exists()
    store.create_table("exemplars")
    assert store.table_names() == ["exemplars"]
