"""The recycled output memory of mixed batches: a buffer is reused only once nothing refers to it."""

from __future__ import annotations

import gc
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import torch

from replaystore.stream import Proportions, ReplayStream, Source
from replaystore.stream.buffers import BufferPool


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_buffer_returns_only_after_its_last_view_and_tensor_are_gone() -> None:
    pool = BufferPool()
    first = pool.empty((100, 8), np.float32)
    first[:] = 1.0
    where = address(first)
    held = torch.from_numpy(first[10:20])  # a training step keeps one batch of the chunk
    del first
    gc.collect()
    second = pool.empty((100, 8), np.float32)
    assert address(second) != where  # still referenced by `held`: not handed out again
    second[:] = 2.0
    assert bool((held == 1.0).all())
    assert pool.free_bytes == 0
    del held
    gc.collect()
    assert pool.free_bytes > 0
    third = pool.empty((100, 8), np.float32)
    assert address(third) == where and pool.free_bytes == 0


def test_sizes_share_buffers_within_a_grain_and_the_pool_keeps_at_most_its_cap() -> None:
    pool = BufferPool(max_free_bytes=64 * 1024)
    a = pool.empty((1000,), np.int64)
    where = address(a)
    del a
    b = pool.empty((1001,), np.int64)  # a slightly larger chunk reuses the same buffer
    assert address(b) == where and b.shape == (1001,) and b.dtype == np.int64
    big = pool.empty((200_000,), np.int64)  # 1.6 MB: over the cap, not kept once freed
    del b, big
    assert pool.free_bytes == 64 * 1024


def test_batches_a_loop_keeps_are_never_overwritten_by_later_mixed_batches(tmp_path: Path) -> None:
    def write(name: str, start: int, n: int) -> str:
        ids = np.arange(start, start + n, dtype=np.int64)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 4).astype(np.float32)), 4)
        uri = str(tmp_path / f"{name}.lance")
        lance.write_dataset(pa.table({"id": ids, "vec": vec}), uri, max_rows_per_group=300)
        return uri

    offsets = {"a": 0, "b": 100_000, "c": 200_000}
    sizes = {"a": 5000, "b": 700, "c": 90}
    sources = [Source.from_lance(name, write(name, offsets[name], sizes[name])) for name in offsets]
    stream = ReplayStream(sources, 64, mixing=Proportions([0.6, 0.3, 0.1]), prefetch=4)
    for epoch in range(2):
        stream.set_epoch(epoch)
        kept = list(stream)  # every batch held until the end, while later ones are assembled
        ids = torch.cat([b["id"] for b in kept]).numpy()
        expected = np.array(list(offsets.values()))[torch.cat([b["_source"] for b in kept]).numpy()]
        assert (ids == expected + torch.cat([b["_position"] for b in kept]).numpy()).all()
        assert all(torch.equal(b["vec"], b["id"].float()[:, None].expand(-1, 4)) for b in kept)
        main = np.sort(ids[ids < offsets["b"]])
        assert main.tolist() == list(range(sizes["a"]))  # the epoch source's rows exactly once
