"""How a `StreamLoader` worker hands a chunk of batches to the main process: in shared memory it reuses.

A tensor that crosses processes the ordinary way costs a new shared-memory segment in the worker,
whose pages the kernel faults in and zeroes while the chunk is copied in, and a file descriptor
handed to the main process over a socket after an authentication handshake (torch's default
sharing strategy). Profiled over 100,000-row epochs, that was most of the workers' time. So each
worker keeps a few buffers (`Slots`) and sends each one to the main process once; afterwards a
chunk travels as which buffer it is in and where its columns lie. The main process hands out views
of that buffer; when the last of them is freed it marks the buffer free in `WorkerState`'s shared
array, and only then does the worker write into it again. A chunk that fits no free buffer (the
training loop holds many batches, or the rows are wider than before) travels in a buffer of its
own, as every chunk did before.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from replaystore.stream.batches import Built
    from replaystore.stream.workers import WorkerState

ALIGN = 64  # bytes: each packed column starts on a cache line
MAX_SLOTS = 8  # reused buffers per worker: chunks in flight, held back for reordering, or held by the loop
GRAIN = 1 << 20  # a new buffer is rounded up to this, with room for chunks a quarter larger

Layout = list[tuple[str, torch.dtype, tuple[int, ...], int]]  # column, dtype, shape, byte offset
Packed = tuple[list[int], list[int], Any]  # steps, rows per step, columns as tensors (or the batches)


class Slots:
    """A worker's reusable shared-memory buffers and which of them it has already sent."""

    def __init__(self, state: WorkerState, worker: int) -> None:
        self.state, self.worker = state, worker
        self.buffers: dict[int, torch.Tensor] = {}

    def take(self, nbytes: int) -> tuple[int, torch.Tensor, bool] | None:
        """A free buffer of at least `nbytes`, now marked busy: (slot, buffer, whether it is new and
        must travel with the chunk). None when every slot is busy. Flags, not this worker's list, say
        what is free: a slot an earlier worker of the same loader used stays busy until released."""
        busy = self.state.busy(self.worker)
        free = [i for i in range(MAX_SLOTS) if busy[i] == 0]
        fits = [i for i in free if i in self.buffers and self.buffers[i].numel() >= nbytes]
        if fits:
            slot, new = min(fits, key=lambda i: self.buffers[i].numel()), False
        elif free:
            slot, new = min(free, key=lambda i: i in self.buffers), True  # an unused slot first
            self.buffers[slot] = _shared(-(-nbytes * 5 // 4 // GRAIN) * GRAIN)
        else:
            return None
        busy[slot] = 1
        return slot, self.buffers[slot], new


class Shipped:
    """A packed chunk on its way to the main process; unpickled there, it becomes the chunk's columns
    (see `arrive`), which is also where a chunk the main process drops unread frees its buffer."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return arrive, self.args


def pack(built: Built, slots: Slots | None) -> Shipped | Packed:
    """A chunk as its columns, each column's batches concatenated in one shared buffer, or as the
    batches themselves where they cannot be (padded widths differ, or non-tensor values)."""
    steps = [step for step, _ in built]
    present = [batch for _, batch in built if batch is not None]
    rows = [0 if batch is None else len(batch["_position"]) for _, batch in built]
    if len(present) < 2:
        return steps, rows, present
    keys = present[0].keys()
    same = all(
        batch.keys() == keys and all(isinstance(batch[k], torch.Tensor) and batch[k].shape[1:] == present[0][k].shape[1:] for k in keys) for batch in present
    )
    if not same:
        return steps, rows, present
    layout: Layout = []
    at = 0
    for key in keys:
        first = present[0][key]
        shape = (sum(len(batch[key]) for batch in present), *first.shape[1:])
        layout.append((key, first.dtype, shape, at))
        at += -(-math.prod(shape) * first.dtype.itemsize // ALIGN) * ALIGN
    taken = slots.take(at) if slots is not None else None
    slot, buffer, new = taken if taken is not None else (-1, _shared(max(at, ALIGN)), True)
    for key, dtype, shape, offset in layout:
        torch.cat([batch[key] for batch in present], out=_view(buffer, dtype, shape, offset))
    token, worker = (slots.state.token, slots.worker) if slots is not None else ("", 0)
    return Shipped(token, worker, slot, buffer if new else None, layout, steps, rows)


def arrive(token: str, worker: int, slot: int, buffer: torch.Tensor | None, layout: Layout, steps: list[int], rows: list[int]) -> Packed:
    """In the main process: the chunk's columns as views of its buffer. A reused buffer is marked free
    once the last view is gone (a numpy array over it is what the views keep alive)."""
    from replaystore.stream.workers import WorkerState

    if slot >= 0:
        state = WorkerState.live(token)
        if buffer is not None:
            state.received[(worker, slot)] = buffer
        whole = state.received[(worker, slot)].numpy()  # a new array object per chunk
        weakref.finalize(whole, state.release, worker, slot)
        buffer = torch.from_numpy(whole)
    assert buffer is not None
    return steps, rows, {key: _view(buffer, dtype, shape, offset) for key, dtype, shape, offset in layout}


def unpack(packed: Shipped | Packed) -> Built:
    """The batches of a packed chunk, as views of its columns."""
    steps, rows, columns = arrive(*packed.args) if isinstance(packed, Shipped) else packed
    if isinstance(columns, list):
        batches = iter(columns)
        return [(step, next(batches) if n else None) for step, n in zip(steps, rows)]
    sizes = [n for n in rows if n]
    parts = {key: value.split_with_sizes(sizes) for key, value in columns.items()}
    out: Built = []
    at = 0
    for step, n in zip(steps, rows):
        out.append((step, {k: v[at] for k, v in parts.items()} if n else None))
        at += bool(n)
    return out


def _shared(nbytes: int) -> torch.Tensor:
    """A byte tensor allocated in shared memory (`share_memory_()` would allocate, then copy it there)."""
    return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...], offset: int) -> torch.Tensor:
    """The column at `offset` of a packed buffer."""
    return buffer[offset : offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
