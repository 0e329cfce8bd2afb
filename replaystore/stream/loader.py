"""`StreamLoader`: a DataLoader whose workers split a stream's work and whose order stays the stream's.

A plain DataLoader collects one item per worker in turn, so a deterministic stream must give worker
w the steps w, w+k, ...: every worker then reads (or skips through) every row of a sequential
source. This loader instead deals out blocks of consecutive steps, so each worker reads its own
contiguous share, sends a chunk of batches at a time through shared memory that it reuses once the
main process has let go of it (`shipping.py`), tagged with their steps, and this loader puts them
back in step order (holding at most about a block, `MAX_BLOCK` steps or fewer, per worker).
Workers persist across epochs and learn each epoch from `WorkerState`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from replaystore.errors import ValidationError
from replaystore.stream.batches import Batch
from replaystore.stream.shipping import unpack
from replaystore.stream.snapshots import MAX_READ_AHEAD, SKIP_ROWS
from replaystore.stream.workers import WorkerState

if TYPE_CHECKING:
    from replaystore.stream.dataset import ReplayStream


MAX_BLOCK = 256  # steps: bounds the batches held back for reordering to this many per worker


def block_steps(global_batch: int, steps: int, workers: int) -> int:
    """Consecutive steps per worker: enough that the rows between a worker's blocks exceed what a scan
    reads past (`SKIP_ROWS`), so it restarts there instead of decoding other workers' rows, and sized
    so that the epoch's `steps` make whole rounds of one block per worker: every worker gets the same
    share (blocks of a fixed size left 2 blocks to one worker and 1 to the other of a 98-step epoch,
    which then waited on the first), never more than an even share and at most `MAX_BLOCK`."""
    wanted = min(MAX_BLOCK, max(MAX_READ_AHEAD, -(-(SKIP_ROWS + 1) // global_batch)))
    rounds = max(1, steps // (workers * wanted))
    return int(max(1, min(MAX_BLOCK, -(-steps // (workers * rounds)))))


class StreamLoader(DataLoader):
    """Batches of `stream` from `num_workers` spawned workers, in the single-process order."""

    def __init__(self, stream: ReplayStream, num_workers: int, **settings: Any) -> None:
        if settings.pop("batch_size", None) is not None:
            raise ValidationError("batch_size", "the stream yields whole batches: set batch_size on ReplayStream, not on its loader")
        context = settings.pop("multiprocessing_context", "spawn")
        if context not in ("spawn", "forkserver") and getattr(context, "get_start_method", lambda: context)() not in ("spawn", "forkserver"):
            raise ValidationError("multiprocessing_context", "Lance is not fork-safe: use 'spawn' (the default) or 'forkserver'")
        context = multiprocessing.get_context(context) if isinstance(context, str) else context
        settings.setdefault("persistent_workers", True)
        self._state: WorkerState | None = None  # made with each set of workers (`__iter__`)
        self._generation = stream._generation
        super().__init__(stream, batch_size=None, num_workers=num_workers, multiprocessing_context=context, **settings)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # batches in order, not DataLoader's iterator object
        stream: ReplayStream = self.dataset  # type: ignore[assignment]
        if stream._generation != self._generation and self._iterator is not None:  # a checkpoint was loaded
            self._iterator._shutdown_workers()  # type: ignore[attr-defined]
            self._iterator = None  # new workers start from the loaded state
        if self._iterator is None:  # new workers get fresh buffers: chunks old ones had in flight never arrive to free theirs
            self._state = WorkerState(len(stream.sources), self.multiprocessing_context, self.num_workers)
        self._generation = stream._generation
        if stream.versions is None:
            stream._pin_versions()
        _, plan = stream._epoch_plan()
        stream._current = plan
        assert self._state is not None
        self._state.store(stream, block_steps(stream.batch_size * stream.world_size, plan.steps - stream.step, self.num_workers))
        stream._shared = self._state  # pickled into workers if this call spawns them
        try:
            tagged = super().__iter__()
        finally:
            stream._shared = None
        return self._in_order(stream, tagged, plan.steps, self._state)

    @staticmethod
    def _in_order(stream: ReplayStream, tagged: Iterator[Any], steps: int, state: WorkerState) -> Iterator[Any]:
        """Yield the workers' (step, batch) pairs in step order, moving the stream along (`state` is
        held here: chunks that arrive name it, even when the loader itself is no longer referenced)."""
        pending: dict[int, Any] = {}
        expected = stream.step
        for packed in tagged:
            pending.update(unpack(packed))
            while expected in pending:
                ready = pending.pop(expected)
                stream._consumed_step(expected)
                expected += 1
                if ready is not None:
                    yield Batch(ready)
        if expected >= steps:
            stream._end_epoch(steps)
