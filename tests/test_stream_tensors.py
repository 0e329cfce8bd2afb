"""Arrow → torch conversion, the memory-mapped hot tier, and priorities round-tripping the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.errors import ValidationError
from replaystore.stream import Batch, HotCache, LossLog, Prioritized, ReplayStream, Source, Uniform, load_priorities, to_tensors, write_priorities


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-1000, 1000), max_size=9), min_size=1, max_size=30), st.integers(0, 5))
def test_variable_lists_become_padded_tensors_with_lengths(values: list[list[int]], cut: int) -> None:
    arr = pa.array(values, pa.list_(pa.int32())).slice(min(cut, len(values) - 1))  # slices keep their offsets
    expect = values[min(cut, len(values) - 1) :]
    out = to_tensors(pa.table({"tokens": arr}))
    assert out["tokens_lengths"].tolist() == [len(v) for v in expect]
    assert out["tokens"].shape == (len(expect), max(map(len, expect)))
    for row, v in zip(out["tokens"].tolist(), expect):
        assert row[: len(v)] == v and all(x == 0 for x in row[len(v) :])


def test_fixed_lists_binary_and_scalars_convert_without_copies_where_possible() -> None:
    vec = np.arange(24, dtype=np.float32).reshape(6, 4)
    nested = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array(np.arange(36, dtype=np.int64)), 3), 2)
    table = pa.table(
        {
            "v": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), 4),
            "m": nested,
            "y": np.arange(6),
            "ok": [True, False] * 3,
            "data": pa.array([np.full(6, i, np.int16).tobytes() for i in range(6)], pa.binary()),
            "shape": pa.array([[2, 3]] * 6, pa.list_(pa.int32())),
            "dtype": ["int16"] * 6,
            "name": list("abcdef"),
        }
    ).slice(1)
    out = to_tensors(table)
    assert torch.equal(out["v"], torch.from_numpy(vec[1:]))
    assert out["m"].shape == (5, 2, 3) and int(out["m"][0, 1, 2]) == 6 + 5
    assert out["y"].dtype == torch.int64 and out["ok"].dtype == torch.bool
    assert out["data"].shape == (5, 2, 3) and out["data"].dtype == torch.int16 and int(out["data"][4, 1, 2]) == 5
    assert out["name"] == list("bcdef")
    assert "shape" not in out and "dtype" not in out and "shape_lengths" not in out  # spent on laying out `data`
    moved = {k: v.to("cpu") for k, v in to_tensors(table.drop_columns(["name"])).items()}  # every value is a tensor
    assert sorted(moved) == ["data", "m", "ok", "v", "y"]
    mixed = to_tensors(pa.table({"data": pa.array([b"ab", b"cde"], pa.binary()), "shape": pa.array([[2], [3]], pa.list_(pa.int32())), "dtype": ["uint8"] * 2}))
    assert mixed["data"].tolist() == [[97, 98, 0], [99, 100, 101]] and mixed["data_lengths"].tolist() == [2, 3]
    assert mixed["shape"].tolist() == [[2], [3]] and mixed["dtype"] == ["uint8"] * 2  # rows differ: the layout stays


def test_nulls_in_integer_columns_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as err:
        to_tensors(pa.table({"label": pa.array([1, None], pa.int64())}))
    assert err.value.field == "label"


def vectors(n: int, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + n)
    return pa.table({"id": ids, "v": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 4).astype(np.float32)), 4), "tag": [f"r{i}" for i in ids]})


def test_hot_cache_serves_the_pinned_version_and_a_new_version_gets_a_new_cache(tmp_path: Path) -> None:
    import lance

    uri = str(tmp_path / "t.lance")
    lance.write_dataset(vectors(500), uri)
    source = Source.from_lance("t", uri, cache=str(tmp_path / "hot"), sampler=Uniform())
    stream = ReplayStream(source, 64, steps_per_epoch=5)
    first = list(stream)
    for batch in first:
        assert torch.equal(batch["v"][:, 0].long(), batch["id"]) and batch["tag"] == [f"r{i}" for i in batch["id"].tolist()]
    lance.write_dataset(vectors(100, start=500), uri, mode="append")
    second = list(stream)
    assert max(int(b["id"].max()) for b in second) >= 500
    cache = HotCache(source, 1, tmp_path / "hot")
    assert sorted(p.name for p in cache.base().glob("v*")) == ["v1", "v2"]
    snap = HotCache(source, 1, tmp_path / "hot").open()
    assert snap.num_rows == 500 and torch.equal(torch.from_numpy(snap.gather("v", np.array([7, 3]))), torch.tensor([[7.0] * 4, [3.0] * 4]))
    assert cache.prune(keep={2}) == [cache.base() / "v1"]
    assert list(ReplayStream(source, 64, steps_per_epoch=1))[0]["id"].max() < 600  # noqa: RUF015 - list() runs the epoch to its end


def test_losses_become_priorities_in_one_merge_and_steer_the_next_epoch(store: replaystore.Store) -> None:
    rows = {
        "buffer": ["b"] * 20, "sample_id": np.arange(100, 120), "class_id": [0] * 20, "task_id": [0] * 20,
        "rank": [1] * 20, "nbytes": [1] * 20,
    }  # fmt: skip
    store.append("exemplars", rows)
    source = Source.from_store(store, "exemplars", columns=["class_id", "sample_id"], id_column="sample_id", sampler=Prioritized(alpha=1.0))
    stream = ReplayStream(source, 10, steps_per_epoch=2)
    log = LossLog()
    for batch in stream:
        log.add([source.name], stream.state_dict()["versions"] or [None], batch, torch.where(batch["sample_id"] == 105, 50.0, 0.0))
    before = store.dataset("priorities").version if store.exists("priorities") else None
    version = write_priorities(store, [source], log.table(), eps=1e-9)
    assert version is not None and version != before
    stored = load_priorities(store, source, None)
    assert stored is not None and stored[5] == pytest.approx(50.0) and np.nanmax(np.delete(stored, 5)) <= 1e-8
    seen = set(log.table()["position"].to_pylist())
    unseen = {100 + i for i in range(20) if i not in seen}  # never trained on: default priority 1
    drawn = torch.cat([b["sample_id"] for b in stream])  # next epoch starts from the stored priorities
    assert set(drawn.tolist()) <= {105} | unseen and (drawn == 105).float().mean() > 0.5
    with pytest.raises(ValidationError):
        log.add([source.name], [None], {"_source": torch.zeros(3), "_position": torch.arange(3)}, [1.0, 2.0])


def test_a_mixture_pads_token_lists_to_the_widest_source_and_refuses_mismatched_columns() -> None:
    from replaystore.stream import ExactK

    short = pa.table({"tokens": pa.array([[1, 2]] * 10, pa.list_(pa.int32())), "name": ["s"] * 10})
    long = pa.table({"tokens": pa.array([[7, 8, 9, 10, 11]] * 4, pa.list_(pa.int32())), "name": ["l"] * 4})
    stream = ReplayStream([Source.from_arrow("short", short), Source.from_arrow("long", long)], 5, mixing=ExactK(2))
    batch = next(iter(stream))
    assert batch["tokens"].shape == (5, 5) and batch["tokens_lengths"].tolist() == [2, 2, 2, 5, 5]
    assert batch["tokens"][0].tolist() == [1, 2, 0, 0, 0] and batch["name"] == ["s", "s", "s", "l", "l"]
    stream.close()
    other = pa.table({"ids": pa.array([[1]] * 4, pa.list_(pa.int32())), "name": ["o"] * 4})
    with pytest.raises(ValidationError) as err:
        list(ReplayStream([Source.from_arrow("short", short), Source.from_arrow("other", other)], 5, mixing=ExactK(2)))
    assert err.value.field == "columns"


def test_a_lance_stream_pads_each_batch_to_its_own_widest_row(tmp_path: Path) -> None:
    """Flat columns are converted once per scanned batch and sliced; padded ones batch by batch,
    so one long row does not widen every batch that shares its scanned batch."""
    import lance

    lengths = [1 + (i % 3) for i in range(40)]
    lengths[37] = 12
    table = pa.table(
        {
            "tokens": pa.array([[i] * n for i, n in enumerate(lengths)], pa.list_(pa.int32())),
            "id": np.arange(40),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(80, dtype=np.float32)), 2),
        }
    )
    lance.write_dataset(table, tmp_path / "tok.lance")
    batches = list(ReplayStream(Source.from_lance("tok", str(tmp_path / "tok.lance")), 8, prefetch=0))
    for k, batch in enumerate(batches):
        expect = lengths[8 * k : 8 * k + 8]
        assert batch["tokens_lengths"].tolist() == expect and batch["tokens"].shape == (8, max(expect))
        assert batch["id"].tolist() == list(range(8 * k, 8 * k + 8))
        assert batch["vec"].tolist() == [[2 * i, 2 * i + 1] for i in range(8 * k, 8 * k + 8)]
    flat = list(ReplayStream(Source.from_lance("tok", str(tmp_path / "tok.lance"), columns=["id", "vec"]), 16, prefetch=0))
    assert torch.cat([b["id"] for b in flat]).tolist() == list(range(40))


def test_a_batch_moves_its_tensors_and_keeps_its_string_columns() -> None:
    """`batch.to(device)` works whatever a source projects, strings included (they stay lists)."""
    table = pa.table({"id": np.arange(6, dtype=np.int64), "name": [f"row {i}" for i in range(6)]})
    batch = next(iter(ReplayStream(Source.from_arrow("t", table), 4, prefetch=0)))
    assert isinstance(batch, Batch) and batch["name"] == ["row 0", "row 1", "row 2", "row 3"]
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved["name"] == batch["name"]
    assert all(isinstance(v, torch.Tensor) for k, v in moved.items() if k != "name")
    assert torch.equal(moved["id"], torch.arange(4))
