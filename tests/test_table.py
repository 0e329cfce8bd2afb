"""A table handle opens its table once per operation, moves to the versions it commits, and loses
nothing to writers that committed since it opened (real Lance tables on disk)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest

import replaystore
from replaystore.errors import NotFoundError, ValidationError
from replaystore.table import Edit


def _rows(ids: list[int], klass: int = 0) -> dict[str, Any]:
    """Exemplar rows (the kind every store knows) with the given sample ids."""
    n = len(ids)
    return {
        "buffer": ["raw"] * n,
        "sample_id": ids,
        "class_id": [klass] * n,
        "task_id": [0] * n,
        "rank": list(range(1, n + 1)),
        "nbytes": [4] * n,
        "data": [b"abcd"] * n,
        "shape": [[4]] * n,
        "dtype": ["uint8"] * n,
    }


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Every `lance.dataset` open, counted by table (a spy on the real function, which still runs)."""
    counted: collections.Counter[str] = collections.Counter()
    real = lance.dataset

    def spy(uri: Any, *args: Any, **kwargs: Any) -> lance.LanceDataset:
        counted[str(uri).rstrip("/").rsplit("/", 1)[-1].removesuffix(".lance")] += 1
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(lance, "dataset", spy)
    yield counted


def test_each_store_operation_opens_its_table_once(store: replaystore.Store, opens: collections.Counter[str]) -> None:
    store.append("exemplars", _rows([1, 2, 3]))
    operations: dict[str, Callable[[], object]] = {
        "append": lambda: store.append("exemplars", _rows([4])),
        "merge": lambda: store.merge("exemplars", _rows([4, 5]), on="sample_id"),
        "update": lambda: store.update("exemplars", {"rank": "rank + 1"}, where="sample_id = 1"),
        "delete": lambda: store.delete("exemplars", "sample_id = 2"),
        "read": lambda: store.read("exemplars", filter="sample_id > 0"),
        "count": lambda: store.count("exemplars"),
        "atomically": lambda: store.atomically("exemplars", lambda ds: (Edit(delete="sample_id = 3"), None)),
        "info": lambda: store.info("exemplars"),
        "create_table (existing)": lambda: store.create_table("exemplars"),
    }
    for name, operation in operations.items():
        opens.clear()
        operation()
        assert opens == {"exemplars": 1}, name
    assert sorted(store.read("exemplars")["sample_id"].to_pylist()) == [1, 4, 5]


def test_an_exemplar_add_opens_the_buffer_and_its_catalog_once_each(store: replaystore.Store, opens: collections.Counter[str]) -> None:
    rng = np.random.default_rng(0)
    buffer = store.exemplars("digits", budget=100_000, selector="herding")
    x = rng.normal(size=(12, 8)).astype(np.float32)
    for klass in (0, 1):  # a new class changes the buffer's settings, which its catalog row lists
        opens.clear()
        buffer.add(klass, x, x)
        assert opens == {"digits": 1, "exemplar_buffers": 1}
    opens.clear()
    buffer.add(1, x[:4], x[:4])  # an existing class: the catalog row stays as it is
    assert opens == {"digits": 1}
    opens.clear()
    report = buffer.budget()
    assert opens == {"digits": 1} and report["per_class"] == {0: 12, 1: 16}


def test_a_handle_moves_to_the_version_each_of_its_commits_made(store: replaystore.Store) -> None:
    table = store.table("exemplars", create="exemplars")
    first = table.version
    assert table.append(_rows([1, 2])) == table.version == first + 1
    assert table.merge(_rows([2, 3]), on="sample_id") == table.version == first + 2
    assert table.update({"rank": "rank * 10"}, where="sample_id = 3") == table.version == first + 3
    assert table.delete("sample_id = 1") == table.version == first + 4
    version, _ = table.atomically(lambda ds: (Edit(insert=pa.table(_rows([7]))), None))
    assert version == table.version == first + 5 == store.table("exemplars").version
    assert sorted(zip(*table.read(columns=["sample_id", "rank"]).to_pydict().values())) == [(2, 1), (3, 20), (7, 1)]
    assert table.count() == 3 and table.info().rows == 3


def test_a_handle_opened_at_an_old_version_reads_it_and_refuses_to_write(store: replaystore.Store) -> None:
    store.append("exemplars", _rows([1]))
    old = store.table("exemplars").version
    store.append("exemplars", _rows([2]))
    before = store.versions("exemplars")
    handle = store.table("exemplars", old)
    assert handle.read()["sample_id"].to_pylist() == [1]
    for write in (
        lambda: handle.append(_rows([3])),
        lambda: handle.merge(_rows([3]), on="sample_id"),
        lambda: handle.update({"rank": "2"}),
        lambda: handle.delete("sample_id = 1"),
        lambda: handle.atomically(lambda ds: (Edit(delete="true"), None)),
    ):
        with pytest.raises(ValidationError, match=r"^version: .*open it without a version to write"):
            write()
    assert store.versions("exemplars") == before


def test_a_handle_opened_before_other_writers_committed_loses_none_of_their_rows(store: replaystore.Store) -> None:
    store.append("exemplars", _rows([1, 2]))
    stale = store.table("exemplars")
    store.append("exemplars", _rows([10]))  # another writer, after the handle opened
    stale.append(_rows([3]))
    store.append("exemplars", _rows([11]))
    stale.merge(_rows([4]), on="sample_id")
    store.append("exemplars", _rows([12]))
    stale.update({"rank": "rank + 100"}, where="sample_id = 1")
    store.append("exemplars", _rows([13]))
    stale.delete("sample_id = 2")
    store.append("exemplars", _rows([14]))
    _, _ = stale.atomically(lambda ds: (Edit(insert=pa.table(_rows([5]))), None))  # refused on the stale version, planned again
    ids = store.read("exemplars")["sample_id"].to_pylist()
    assert sorted(ids) == [1, 3, 4, 5, 10, 11, 12, 13, 14]
    assert stale.version == store.table("exemplars").version


def test_find_is_none_only_for_a_missing_table(store: replaystore.Store) -> None:
    assert store.find("exemplars") is None and not Path(store.uri).exists()  # looking creates nothing
    store.append("exemplars", _rows([1]))
    found = store.find("exemplars")
    assert found is not None and found.count() == 1
    with pytest.raises(NotFoundError, match="no version or tag 99"):
        store.find("exemplars", 99)


def test_creating_a_table_of_another_kind_names_the_existing_kind(store: replaystore.Store) -> None:
    store.create_table("exemplars")
    with pytest.raises(ValidationError, match="already exists with kind 'exemplars', not 'experiences'"):
        store.table("exemplars", create="experiences", params={"embedding_dim": 4})
    with pytest.raises(ValidationError, match=r"^version: "):
        store.table("exemplars", 1, create="exemplars")


def test_ingest_and_distill_open_each_table_a_fixed_number_of_times_whatever_the_batches(store: replaystore.Store, opens: collections.Counter[str]) -> None:
    from replaystore.gere import distill, ingest
    from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer

    texts = python_docstrings(24)
    tokenizer = word_tokenizer(texts, vocab_size=800)
    model = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64).eval()
    ingest(store, texts, source="docstrings", tokenizer=tokenizer, max_length=64, chunk_size=6)  # 4 commits
    assert opens == {"general_samples": 1}
    opens.clear()
    summary = distill(store, model, batch_size=3)  # 8 batches, each a commit of states and one of statistics
    assert summary["states_written"] == 24
    # a lookup of what is stored, then one handle each that its commits move on (before: 2 opens per commit)
    assert opens == {"general_samples": 1, "activation_states": 2, "activation_stats": 2}
