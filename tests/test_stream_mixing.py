"""Mixture assembly: counts per step, views cut across record batches, one copy per mixed batch."""

from __future__ import annotations

import multiprocessing
import pickle
from collections import Counter
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import replaystore.stream.snapshots as snapshots_module
from replaystore.errors import ValidationError
from replaystore.stream import Proportions, ReplayStream, Sequential, Source
from replaystore.stream.batches import chunk_steps
from replaystore.stream.loader import MAX_BLOCK, block_steps
from replaystore.stream.order import worker_steps
from replaystore.stream.shipping import unpack
from replaystore.stream.snapshots import LANCE_IO_BUFFER_ENV, LOCAL_IO_BUFFER, MAX_READ_AHEAD, io_buffer_size
from replaystore.stream.sources import CHUNK_BYTES
from replaystore.stream.tensors import concat, cut, to_arrays
from replaystore.stream.workers import WorkerState

FAST = settings(max_examples=60, deadline=None)
weights = st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=5).filter(lambda w: sum(w) > 0.01)


@FAST
@given(weights, st.integers(1, 300), st.integers(1, 80))
def test_constant_weights_count_exactly_like_the_step_by_step_apportioning(w: list[float], batch: int, steps: int) -> None:
    fixed = Proportions(w).counts(steps, batch, len(w))
    looped = Proportions(lambda step: w).counts(steps, batch, len(w))  # a callable takes the per-step path
    assert (fixed.sum(axis=1) == batch).all() and (fixed >= 0).all()
    # cumulative shares never drift from the target by a row or more
    target = np.outer(np.arange(1, steps + 1), np.asarray(w) / sum(w) * batch)
    assert np.abs(np.cumsum(fixed, axis=0) - target).max() < 1 + 1e-6
    assert np.abs(np.cumsum(fixed, axis=0) - np.cumsum(looped, axis=0)).max() <= 1


@FAST
@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.data())
def test_cut_returns_consecutive_runs_as_views_across_pieces(piece_sizes: list[int], data: st.DataObject) -> None:
    total = sum(piece_sizes)
    values = np.arange(total, dtype=np.int64)
    starts = np.cumsum([0, *piece_sizes])
    pieces = [{"v": values[a:b], "s": [str(x) for x in values[a:b]]} for a, b in zip(starts[:-1], starts[1:])]
    sizes = data.draw(st.lists(st.integers(0, 7), max_size=8).filter(lambda s: sum(s) <= total))
    runs = cut(pieces, sizes)
    at = 0
    for size, run in zip(sizes, runs):
        got = np.concatenate([p["v"] for p in run]) if run else np.empty(0, np.int64)
        assert got.tolist() == list(range(at, at + size))
        assert [x for p in run for x in p["s"]] == [str(x) for x in range(at, at + size)]
        assert all(np.shares_memory(p["v"], values) for p in run if len(p["v"]))  # views, not copies
        at += size


def test_concat_copies_once_widens_padded_lists_and_joins_strings() -> None:
    a = to_arrays(pa.table({"tok": pa.array([[1, 2], [3]], pa.list_(pa.int64())), "name": ["a", "b"]}))
    b = to_arrays(pa.table({"tok": pa.array([[4, 5, 6]], pa.list_(pa.int64())), "name": ["c"]}))
    out = concat([a, b])
    assert out["tok"].tolist() == [[1, 2, 0], [3, 0, 0], [4, 5, 6]]
    assert out["tok_lengths"].tolist() == [2, 1, 3]
    assert out["name"] == ["a", "b", "c"]
    with pytest.raises(ValidationError, match="columns"):
        concat([a, {"other": np.zeros(1)}])


def test_a_mixture_of_sources_with_different_columns_is_refused_naming_them() -> None:
    sources = [Source.from_arrow("a", pa.table({"x": np.arange(8.0)})), Source.from_arrow("b", pa.table({"y": np.arange(8.0)}))]
    with pytest.raises(ValidationError, match=r"columns.*\['x'\] vs \['y'\]"):
        next(iter(ReplayStream(sources, 4, mixing=Proportions([0.5, 0.5]), prefetch=0)))


def test_mixed_batches_hold_the_planned_rows_of_every_source_in_source_order() -> None:
    def table(start: int, n: int) -> pa.Table:
        ids = np.arange(start, start + n, dtype=np.int64)
        return pa.table({"id": ids, "x": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 2).astype(np.float32)), 2)})

    sources = [Source.from_arrow(name, table(start, n), sampler=Sequential()) for name, start, n in (("a", 0, 100), ("b", 1000, 30), ("c", 2000, 7))]
    stream = ReplayStream(sources, 10, mixing=Proportions([0.6, 0.3, 0.1]))
    steps = len(stream)
    counts = stream.mixing.counts(steps, 10, 3)  # type: ignore[union-attr]
    counts[-1, 0] -= counts[:, 0].sum() - 100  # the epoch ends when source a's 100 rows are spent
    for step, batch in enumerate(stream):
        assert torch.equal(batch["x"][:, 0], batch["id"].float())  # columns stay aligned row by row
        source = batch["_source"].numpy()
        assert np.bincount(source, minlength=3).tolist() == counts[step].tolist()
        assert (np.diff(source) >= 0).all()  # source by source
        offsets = np.array([0, 1000, 2000])[source]
        assert (batch["id"].numpy() == offsets + batch["_position"].numpy()).all()


def test_a_loader_refuses_a_batch_size_and_fork_by_name() -> None:
    stream = ReplayStream(Source.from_arrow("a", pa.table({"id": np.arange(8)})), 4)
    with pytest.raises(ValidationError) as err:
        stream.loader(num_workers=1, batch_size=4)
    assert err.value.field == "batch_size"
    with pytest.raises(ValidationError) as err:
        stream.loader(num_workers=1, multiprocessing_context="fork")
    assert err.value.field == "multiprocessing_context"


@settings(max_examples=10, deadline=None)
@given(workers=st.integers(2, 4), batch=st.sampled_from([512, 1024, 2048]))
def test_loader_workers_each_decode_about_their_own_share(big_source: str, workers: int, batch: int) -> None:
    """What `stream.loader` workers do (run here in-process): blocks of steps, every step once, and
    each worker decodes little beyond its own rows (a plain DataLoader's round-robin decodes all)."""
    stream = ReplayStream(Source.from_lance("big", big_source), batch)
    stream.set_epoch(0)
    block = block_steps(batch, len(stream), workers)
    state = WorkerState(1, multiprocessing.get_context("spawn"), workers)
    state.store(stream, block)
    decoded, steps = [], []
    scan = lance.LanceDataset.to_batches

    for worker in range(workers):
        copy = pickle.loads(pickle.dumps(stream))
        copy._shared = state
        rows = [0]

        def counted(ds: lance.LanceDataset, *args: Any, rows: list[int] = rows, **kwargs: Any) -> Any:
            for b in scan(ds, *args, **kwargs):
                rows[0] += b.num_rows
                yield b

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lance.LanceDataset, "to_batches", counted)
            copy._shared.load_into(copy)
            tagged = [cell for packed in copy._tagged(worker, workers) for cell in unpack(packed)]
        steps += [step for step, _ in tagged]
        for step, b in tagged:
            assert b["id"].tolist() == list(range(step * batch, min((step + 1) * batch, 200_000)))
        decoded.append(rows[0])
    assert sorted(steps) == list(range(len(stream)))
    blocks = -(-200_000 // (block * batch))
    slack = block * batch + blocks * snapshots_module.SCAN_BATCH  # a worker's last block, a scan batch past each block
    assert max(decoded) <= 200_000 / workers + slack  # a plain DataLoader's workers each decode all 200,000


@FAST
@given(st.integers(1, 5000), st.integers(2, 8), st.sampled_from([1, 64, 1024, 8192]))
def test_loader_blocks_give_every_worker_an_equal_share_and_a_gap_a_scan_restarts_at(steps: int, workers: int, batch: int) -> None:
    """Blocks come in whole rounds of one per worker, so shares differ by less than a block, and a
    worker with several blocks skips at least the rows a scan reads past (blocks capped at MAX_BLOCK)."""
    block = block_steps(batch, steps, workers)
    shares = [len(worker_steps(steps, workers, w, block=block)) for w in range(workers)]
    assert sum(shares) == steps and max(shares) - min(shares) <= block and block <= -(-steps // workers)
    if max(shares) > block and block < MAX_BLOCK:  # a worker with several blocks
        assert (workers - 1) * block * batch > snapshots_module.SKIP_ROWS


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("big") / "big.lance")
    lance.write_dataset(pa.table({"id": np.arange(200_000, dtype=np.int64)}), uri, max_rows_per_file=50_000)
    return uri


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three Lance tables (200, 37 and 90 rows, several files each) with ids that tell them apart."""
    folder = tmp_path_factory.mktemp("wrap")
    uris = []
    for k, n in enumerate((200, 37, 90)):
        ids = np.arange(k * 1000, k * 1000 + n, dtype=np.int64)
        uris.append(str(folder / f"s{k}.lance"))
        lance.write_dataset(pa.table({"id": ids, "x": ids.astype(np.float32)}), uris[-1], max_rows_per_file=50)
    return uris


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2), st.integers(1, 48), st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3), st.integers(0, 2))
def test_a_source_read_more_than_once_per_epoch_is_decoded_once_and_yields_the_same_rows(
    small_sources: list[str], world: int, batch: int, weights: list[float], epoch: int
) -> None:
    def run(retain_bytes: int) -> tuple[list[list[int]], Counter[str]]:
        scans: Counter[str] = Counter()
        scan = lance.LanceDataset.to_batches

        def counted(ds: lance.LanceDataset, *args: Any, **kwargs: Any) -> Any:
            scans[ds.uri] += 1
            return scan(ds, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(snapshots_module, "SCAN_BATCH", 16)  # many scan batches per table
            patch.setattr(snapshots_module, "RETAIN_BYTES", retain_bytes)
            patch.setattr(lance.LanceDataset, "to_batches", counted)
            out = []
            for rank in range(world):
                stream = ReplayStream(
                    [Source.from_lance(f"s{k}", uri) for k, uri in enumerate(small_sources)],
                    batch, mixing=Proportions(weights), rank=rank, world_size=world, prefetch=0,
                )  # fmt: skip
                stream.set_epoch(epoch)
                out += [b["id"].tolist() for b in stream]
        return out, scans

    kept, kept_scans = run(snapshots_module.RETAIN_BYTES)
    decoded, _ = run(0)
    assert kept == decoded  # the same batches, row for row
    for uri in small_sources:  # one pass from row 0 (plus the rank's first, partial one) per rank
        assert kept_scans[uri] <= 2 * world


def test_chunks_hold_about_chunk_bytes_so_wide_rows_are_read_a_few_steps_at_a_time() -> None:
    def built(columns: int) -> list[tuple[int, dict[str, Any] | None]]:
        return [(step, {"x": torch.zeros(1024, columns), "_source": torch.zeros(1024, dtype=torch.int16)}) for step in range(8)]

    assert chunk_steps(built(4)) == MAX_READ_AHEAD  # ~18 KB a step: as many steps as allowed
    assert chunk_steps(built(256)) == CHUNK_BYTES // (1024 * 256 * 4 + 2048)  # ~1 MB a step: 7 steps
    assert chunk_steps(built(4096)) == 1  # 16 MB a step: one at a time
    assert chunk_steps([(0, None)]) == MAX_READ_AHEAD  # a rank with no rows in a step


def _count_calls(patch: pytest.MonkeyPatch, method: str) -> Counter[str]:
    """Calls of a real `LanceDataset` method, per table URI (the call goes through unchanged)."""
    calls: Counter[str] = Counter()
    real = getattr(lance.LanceDataset, method)

    def counted(ds: lance.LanceDataset, *args: Any, **kwargs: Any) -> Any:
        calls[ds.uri] += 1
        return real(ds, *args, **kwargs)

    patch.setattr(lance.LanceDataset, method, counted)
    return calls


def _ids(k: int, n: int, start: int = 0) -> pa.Table:
    ids = np.arange(k * 1000 + start, k * 1000 + start + n, dtype=np.int64)
    return pa.table({"id": ids, "x": ids.astype(np.float32)})


def test_a_wrapping_source_is_decoded_in_its_first_epoch_only_while_its_version_stays(tmp_path: Any) -> None:
    uris = [str(tmp_path / "main.lance"), str(tmp_path / "replay.lance")]
    lance.write_dataset(_ids(0, 200), uris[0], max_rows_per_file=50)
    lance.write_dataset(_ids(1, 37), uris[1], max_rows_per_file=10)

    def stream() -> ReplayStream:  # the replay table (37 rows) gives half of 400 rows an epoch: it wraps
        return ReplayStream([Source.from_lance("main", uris[0]), Source.from_lance("replay", uris[1])], 10, mixing=Proportions([1, 1]), prefetch=0)

    def fresh(epoch: int) -> list[list[int]]:  # what a stream that kept nothing yields in that epoch
        made = stream()
        made.set_epoch(epoch)
        return [b["id"].tolist() for b in made]

    before = [fresh(epoch) for epoch in range(3)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshots_module, "SCAN_BATCH", 16)
        scans = _count_calls(patch, "to_batches")
        looped = stream()
        assert [[b["id"].tolist() for b in looped] for _ in range(3)] == before
        assert scans[uris[1]] == 1 and scans[uris[0]] == 3  # the replay table once, the main table every epoch
        lance.write_dataset(_ids(1, 5, start=37), uris[1], mode="append")  # a new version of the replay table
        changed = [b["id"].tolist() for b in looped]
        assert scans[uris[1]] == 2  # decoded again, once
        assert set(range(1037, 1042)) <= {i for batch in changed for i in batch}  # the new rows are in the mix
        again = [b["id"].tolist() for b in looped]
        assert scans[uris[1]] == 2
        looped.close()  # lets go of the kept rows: the next epoch decodes again
        after_close = [b["id"].tolist() for b in looped]
        assert scans[uris[1]] == 3
    assert changed == fresh(3) and again == fresh(4) and after_close == fresh(5)


def test_a_filtered_source_is_read_and_filtered_once_per_version(tmp_path: Any) -> None:
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(_ids(0, 100), uri)
    with pytest.MonkeyPatch.context() as patch:
        reads = _count_calls(patch, "to_table")
        stream = ReplayStream(Source.from_lance("even", uri, filter="id % 2 = 0"), 8, prefetch=0)
        assert len(stream) == 7
        epochs = [[i for b in stream for i in b["id"].tolist()] for _ in range(3)]
        assert sum(reads.values()) == 1
        lance.write_dataset(_ids(0, 20, start=100), uri, mode="append")
        assert len(stream) == 8  # the next epoch's version (len pins it)
        grown = [i for b in stream for i in b["id"].tolist()]
        assert sum(reads.values()) == 2
    assert epochs == [list(range(0, 100, 2))] * 3 and grown == list(range(0, 120, 2))


def test_scans_of_local_tables_bound_lances_read_ahead(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lance's default read-ahead (2 GiB, sized for object stores) let a scan of local files buffer the
    whole table; the stream bounds it there, leaves object stores to Lance, and defers to a user's
    `LANCE_DEFAULT_IO_BUFFER_SIZE`."""
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(_ids(0, 5000), uri)
    asked: list[Any] = []
    real = lance.LanceDataset.to_batches

    def recorded(ds: lance.LanceDataset, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("io_buffer_size"))
        return real(ds, *args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "to_batches", recorded)
    monkeypatch.delenv(LANCE_IO_BUFFER_ENV, raising=False)
    assert [int(i) for b in ReplayStream(Source.from_lance("t", uri), 1000, prefetch=0) for i in b["id"]] == list(range(5000))
    assert asked and set(asked) == {LOCAL_IO_BUFFER}
    asked.clear()
    monkeypatch.setenv(LANCE_IO_BUFFER_ENV, str(1 << 20))
    assert sum(len(b["id"]) for b in ReplayStream(Source.from_lance("t", uri), 1000, prefetch=0)) == 5000
    assert asked and set(asked) == {None}
    monkeypatch.delenv(LANCE_IO_BUFFER_ENV)
    assert io_buffer_size("file://" + uri) == LOCAL_IO_BUFFER and io_buffer_size("s3://bucket/t.lance") is None
