"""Snapshots hand out the same rows whichever way they gather them: numpy views of an in-memory
table's columns where every column has one, Arrow's take kernel where one has not, and the hot
tier's memmaps. Each is checked against Arrow's own take of the same positions, converted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.stream import HotCache, Source
from replaystore.stream.cache import MemmapSnapshot
from replaystore.stream.snapshots import ArrowSnapshot, numpy_columns
from replaystore.stream.tensors import to_arrays

ROWS = 300


def fixed(n: int) -> pa.Table:
    """Every column a number or a fixed-size list of numbers (nested too), of several widths."""
    ids = np.arange(n, dtype=np.int64)
    grid = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array((np.repeat(ids, 4) % 7).astype(np.int16)), 2), 2)
    vector = pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 3).astype(np.float32) / 3), 3)
    return pa.table({"id": ids, "vector": vector, "grid": grid, "label": (ids % 10).astype(np.uint8), "score": ids / 7.0})


def expected(table: pa.Table, positions: np.ndarray) -> dict[str, np.ndarray]:
    return to_arrays(table.take(pa.array(positions)))


def joined(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: np.concatenate([p[key] for p in pieces]) if isinstance(pieces[0][key], np.ndarray) else [v for p in pieces for v in p[key]] for key in pieces[0]
    }


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key


positions = st.one_of(
    st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=64).map(np.array),  # scattered, repeats allowed
    st.tuples(st.integers(0, ROWS - 1), st.integers(1, 64)).map(lambda a: np.arange(a[0], min(a[0] + a[1], ROWS))),  # one run
)


@settings(max_examples=60, deadline=None)
@given(positions)
def test_an_in_memory_table_of_numbers_gathers_from_numpy_views_the_rows_arrow_would_take(at: np.ndarray) -> None:
    table = fixed(ROWS)
    snap = ArrowSnapshot(table)
    assert snap.columns is not None  # the numpy path is the one under test
    assert_same(joined(snap.read_arrays(at)), expected(table, at))


@pytest.mark.parametrize(
    "table",
    [
        fixed(ROWS).append_column("tag", pa.array([f"r{i}" for i in range(ROWS)])),  # strings stay lists
        fixed(ROWS).set_column(4, "score", pa.array([None, *np.arange(1.0, ROWS)])),  # a null
        pa.concat_tables([fixed(ROWS // 2), fixed(ROWS - ROWS // 2)]),  # two chunks
        fixed(ROWS).append_column("on", pa.array(np.arange(ROWS) % 2 == 0)),  # booleans are bits
    ],
    ids=["string", "null", "chunks", "bool"],
)
def test_tables_without_numpy_views_for_every_column_still_take_with_arrow(table: pa.Table) -> None:
    snap = ArrowSnapshot(table)
    assert numpy_columns(table) is None and snap.columns is None
    for at in (np.array([5, 3, 3, 250, 0]), np.arange(10, 40)):
        assert_same(joined(snap.read_arrays(at)), expected(table, at))


@pytest.fixture(scope="module")
def hot(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemmapSnapshot, pa.Table]:
    folder: Path = tmp_path_factory.mktemp("hot")
    table = fixed(ROWS)
    lance.write_dataset(table, str(folder / "t.lance"))
    source = Source.from_lance("t", str(folder / "t.lance"), cache=str(folder / "cache"))
    snap = HotCache(source, 1, folder / "cache").open()
    assert isinstance(snap, MemmapSnapshot) and snap.rest is None  # every column lives in a memmap
    return snap, table


@settings(max_examples=60, deadline=None)
@given(positions)
def test_the_hot_tier_gathers_from_its_memmaps_the_rows_arrow_would_take(hot: tuple[MemmapSnapshot, pa.Table], at: np.ndarray) -> None:
    snap, table = hot
    assert_same(joined(snap.read_arrays(at)), expected(table, at))
