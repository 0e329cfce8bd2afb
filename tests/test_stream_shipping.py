"""How `stream.loader` workers hand chunks to the main process: shared buffers reused only once free."""

from __future__ import annotations

import gc
import multiprocessing
import pickle

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.stream.shipping import MAX_SLOTS, Shipped, Slots, pack, unpack
from replaystore.stream.workers import WorkerState


def chunk(tag: int, rows: int, steps: int = 2) -> list[tuple[int, dict[str, torch.Tensor] | None]]:
    """`steps` batches of `rows` rows whose values say which chunk and step they belong to."""
    return [
        (s, {"x": torch.full((rows, 3), float(tag * 10 + s)), "flag": torch.full((rows,), s % 2 == 0), "_position": torch.arange(rows)}) for s in range(steps)
    ]


def slots(workers: int = 1) -> Slots:
    return Slots(WorkerState(1, multiprocessing.get_context("spawn"), workers), 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.booleans()), min_size=1, max_size=25))
def test_batches_the_loop_still_holds_are_never_overwritten_by_later_chunks(chunks: list[tuple[int, bool]]) -> None:
    """Whatever chunks follow and whichever batches the loop keeps, a kept batch keeps its values:
    a worker writes into a buffer again only after the main process has let go of every view of it."""
    mine = slots()
    held = []
    for tag, (rows, keep) in enumerate(chunks):
        batches = unpack(pack(chunk(tag, rows), mine))
        if keep:
            held.append((tag, batches))
        del batches
        for kept_tag, kept in held:
            for step, batch in kept:
                assert batch is not None and (batch["x"] == kept_tag * 10 + step).all()
                assert batch["flag"].dtype == torch.bool and bool(batch["flag"].all()) == (step % 2 == 0)
    assert len(mine.buffers) <= MAX_SLOTS


def test_a_buffer_travels_once_and_is_reused_once_its_batches_are_freed() -> None:
    mine = slots()
    shipped = [pack(chunk(tag, 64), mine) for tag in range(1)]
    assert isinstance(shipped[0], Shipped) and shipped[0].args[3] is not None  # the first chunk carries its buffer
    first = unpack(shipped[0])
    held = pack(chunk(1, 64), mine)
    assert isinstance(held, Shipped) and held.args[2] != shipped[0].args[2]  # slot 0 is still in use
    del first, shipped
    gc.collect()
    again = pack(chunk(2, 64), mine)
    assert isinstance(again, Shipped) and again.args[2] == 0 and again.args[3] is None  # reused, sent without its buffer
    assert all((b["x"] == 20 + s).all() for s, b in unpack(again) if b is not None)


def test_a_chunk_that_fits_no_free_buffer_travels_in_its_own() -> None:
    mine = slots()
    kept = [unpack(pack(chunk(tag, 16), mine)) for tag in range(MAX_SLOTS)]  # every slot held by the loop
    extra = pack(chunk(99, 16), mine)
    assert isinstance(extra, Shipped) and extra.args[2] == -1 and extra.args[3] is not None
    assert all((b["x"] == 990 + s).all() for s, b in unpack(pickle.loads(pickle.dumps(extra))) if b is not None)
    assert len(kept) == MAX_SLOTS


def test_batches_that_cannot_share_a_buffer_travel_as_they_are() -> None:
    ragged = [(0, {"x": torch.zeros(2, 3), "_position": torch.arange(2)}), (1, {"x": torch.zeros(2, 4), "_position": torch.arange(2)}), (2, None)]
    packed = pack(ragged, slots())
    assert not isinstance(packed, Shipped)
    out = unpack(packed)
    assert [step for step, _ in out] == [0, 1, 2] and out[2][1] is None and out[1][1] is not None and out[1][1]["x"].shape == (2, 4)
