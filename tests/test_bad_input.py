"""The bad-input table: each case gets a clear error naming the problem, and the store is unchanged.

docs/guarantees.md's `## Bad input` table lists the same cases; add a row there when adding one here.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.errors import NotFoundError, StoreURIError, TableNameError, ValidationError
from replaystore.gere import tm_margin_loss
from replaystore.query import QueryRefusedError

DIM = 8


def exemplar(**change: Any) -> dict[str, list]:
    return {"buffer": ["b"], "sample_id": [7], "class_id": [3], "task_id": [0], "rank": [1], "nbytes": [64], **change}


def priority(**change: Any) -> dict[str, list]:
    return {"source": ["exemplars"], "sample_id": ["7"], "priority": [0.5], **change}


def experience(**change: Any) -> dict[str, Any]:
    row = {
        "experience_id": ["e1"],
        "workspace": ["w"],
        "kind": ["success"],
        "when_to_use": ["when the tests fail"],
        "content": ["read the error first"],
        "embedding": np.ones((1, DIM), dtype=np.float32),
    }
    return {**row, **change}


def invalid_utf8(text: bytes) -> pa.Array:
    """An Arrow string array whose bytes are not UTF-8 (Arrow only checks this when asked)."""
    offsets = pa.py_buffer(np.array([0, len(text)], dtype=np.int32).tobytes())
    return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(text)])


@dataclass(frozen=True)
class Case:
    name: str
    action: Callable[[replaystore.Store], Any]
    error: type[Exception]
    message: str


CASES = [
    Case(
        "missing column",
        lambda s: s.append("exemplars", {k: v for k, v in exemplar().items() if k != "class_id"}),
        ValidationError,
        "class_id: missing required column",
    ),
    Case("unknown column", lambda s: s.append("exemplars", exemplar(colour=["red"])), ValidationError, "colour: unknown column"),
    Case("wrong column type", lambda s: s.append("priorities", priority(priority=["high"])), ValidationError, "priority: values cannot be read as double"),
    Case("null in a required column", lambda s: s.append("exemplars", exemplar(task_id=[None])), ValidationError, "task_id: is not nullable"),
    Case(
        "vector of the wrong dimension",
        lambda s: s.append("experiences", experience(embedding=np.ones((1, 3), np.float32))),
        ValidationError,
        f"embedding: vector dimension must be {DIM}, got 3",
    ),
    Case("NaN priority", lambda s: s.append("priorities", priority(priority=[float("nan")])), ValidationError, "priority: must be finite"),
    Case("inf priority", lambda s: s.append("priorities", priority(priority=[float("inf")])), ValidationError, "priority: must be finite"),
    Case("negative priority", lambda s: s.append("priorities", priority(priority=[-0.5])), ValidationError, "priority: must be ≥ 0"),
    Case("negative priority by update", lambda s: s.update("priorities", {"priority": "priority - 1"}), ValidationError, "priority: must be ≥ 0, got -0.5"),
    Case(
        "NaN priority by update", lambda s: s.update("priorities", {"priority": "priority / 0.0 - priority / 0.0"}), ValidationError, "priority: must be finite"
    ),
    Case("class id as text", lambda s: s.append("exemplars", exemplar(class_id=["cat"])), ValidationError, "class_id: values cannot be read as int64"),
    Case("class id as float", lambda s: s.append("exemplars", exemplar(class_id=[3.5])), ValidationError, "class_id: expected int64, got double"),
    Case(
        "class id as float array", lambda s: s.append("exemplars", exemplar(class_id=np.array([3.0]))), ValidationError, "class_id: expected int64, got double"
    ),
    Case("text bytes not UTF-8", lambda s: s.append("priorities", priority(source=[b"\xff\xfe"])), ValidationError, "source: values cannot be read as string"),
    Case(
        "Arrow text not UTF-8",
        lambda s: s.append("priorities", priority(source=invalid_utf8(b"\xc3\x28"))),
        ValidationError,
        "source: text must be valid UTF-8",
    ),
    Case("negative budget", lambda s: s.exemplars("cifar", budget=-1), ValidationError, "budget: must be a whole number ≥ 0, got -1"),
    Case("NaN budget", lambda s: s.exemplars("cifar", budget=float("nan")), ValidationError, "budget: must be a whole number ≥ 0, got nan"),
    Case(
        "activation shape not the model's",
        lambda s: tm_margin_loss(torch.zeros(2, 3, 4), torch.zeros(5), torch.zeros(5), frozen=torch.zeros(2, 3, 5)),
        ValidationError,
        "hidden: shape (2, 3, 4) does not match the frozen states (2, 3, 5)",
    ),
    Case("SQL that deletes", lambda s: s.sql("DELETE FROM exemplars"), QueryRefusedError, "DELETE writes data; replaystore SQL is read-only"),
    Case("SQL that drops a table", lambda s: s.sql("DROP TABLE exemplars"), QueryRefusedError, "DROP changes the catalog"),
    Case("unknown table", lambda s: s.read("no_such_table"), NotFoundError, "unknown table 'no_such_table'"),
    Case("unknown version", lambda s: s.read("exemplars", version=999), NotFoundError, "has no version or tag 999"),
    Case("unknown tag", lambda s: s.restore("exemplars", "no-such-tag"), NotFoundError, "has no version or tag 'no-such-tag'"),
    Case("unknown column in update", lambda s: s.update("exemplars", {"colour": "'red'"}), ValidationError, "colour: unknown column"),
    Case(
        "delete predicate on an unknown column",
        lambda s: s.delete("exemplars", "colour = 'red'"),
        ValidationError,
        "where: Schema error: No field named colour",
    ),
    Case(
        "malformed update predicate",
        lambda s: s.update("exemplars", {"rank": "rank + 1"}, where="sample_id ="),
        ValidationError,
        "where: Error parsing statement",
    ),
    Case("update expression that is not SQL", lambda s: s.update("exemplars", {"rank": "no_such_fn(rank)"}), ValidationError, "values: Error parsing function"),
    Case(
        "read filter on an unknown column", lambda s: s.read("exemplars", filter="colour = 1"), ValidationError, "filter: Schema error: No field named colour"
    ),
    Case("malformed URI: no bucket", lambda s: replaystore.open("s3://"), StoreURIError, "missing bucket name"),
    Case("malformed URI: no slashes", lambda s: replaystore.open("s3:bucket/prefix"), StoreURIError, "malformed store URI"),
    Case("malformed URI: unknown scheme", lambda s: replaystore.open("ftp://host/store"), StoreURIError, "unsupported store URI scheme 'ftp'"),
    Case("table name escapes the store", lambda s: s.append("../outside", exemplar(), kind="exemplars"), TableNameError, "'../outside' is not allowed"),
    Case("absolute table name", lambda s: s.read("/etc/passwd"), TableNameError, "'/etc/passwd' is not allowed"),
]


def snapshot(store: replaystore.Store) -> dict[str, tuple[int, int]]:
    """What must not change: each table's latest version and row count."""
    return {name: (store.dataset(name).version, store.count(name)) for name in store.table_names()}


@pytest.fixture
def filled(store: replaystore.Store) -> replaystore.Store:
    store.append("exemplars", exemplar())
    store.append("priorities", priority())
    store.create_table("experiences", params={"embedding_dim": DIM})
    store.append("experiences", experience())
    return store


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_by_name_and_store_unchanged(filled: replaystore.Store, case: Case) -> None:
    before = snapshot(filled)
    with pytest.raises(case.error) as err:
        case.action(filled)
    assert case.message in str(err.value)
    assert snapshot(filled) == before
    copied = pickle.loads(pickle.dumps(err.value))  # errors cross process boundaries (Ray workers, spawn)
    assert type(copied) is type(err.value) and str(copied) == str(err.value)
    assert [p.name for p in Path(filled.uri).parent.iterdir()] == ["store"], "nothing written beside the store"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=20))
def test_a_priority_batch_is_written_whole_or_not_at_all(store: replaystore.Store, values: list[float]) -> None:
    """Property: a batch lands as exactly one new version iff every priority is finite and ≥ 0."""
    store.create_table("priorities")
    before = snapshot(store)["priorities"]
    batch = {"source": ["s"] * len(values), "sample_id": [str(i) for i in range(len(values))], "priority": values}
    valid = all(np.isfinite(v) and v >= 0 for v in values)
    if valid:
        store.append("priorities", batch)
        assert snapshot(store)["priorities"] == (before[0] + 1, before[1] + len(values))
    else:
        with pytest.raises(ValidationError, match="priority: must be"):
            store.append("priorities", batch)
        assert snapshot(store)["priorities"] == before
