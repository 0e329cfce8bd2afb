"""Where the main process stands, shared with a `StreamLoader`'s persistent workers.

Workers are spawned once (a spawn start costs seconds: torch, Lance and the stream are imported
again) and then serve epoch after epoch; each time an epoch starts they read the epoch, the step to
start from, the pinned versions and the rows already used from this block of shared memory, which
the main process writes before it asks them for batches.
"""

from __future__ import annotations

import uuid
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from replaystore.stream.shipping import MAX_SLOTS

if TYPE_CHECKING:
    from replaystore.stream.dataset import ReplayStream

_HEAD = 4  # epoch, step, global_base, block; then one version and one start row count per source
_NONE = -1  # a source without versions (an Arrow table)


class WorkerState:
    """A few int64 values in shared memory (a `RawArray`: inherited by spawned workers, never pickled
    otherwise), among them `block`, the consecutive steps each worker produces at a time; and which of
    each worker's reused buffers the main process still holds (`shipping.py`)."""

    _live: ClassVar[weakref.WeakValueDictionary[str, WorkerState]] = weakref.WeakValueDictionary()

    def __init__(self, sources: int, context: Any, workers: int = 1) -> None:
        self.sources = sources
        self._values = context.RawArray("q", _HEAD + 2 * sources)
        self._busy = context.RawArray("q", workers * MAX_SLOTS)
        self.token = uuid.uuid4().hex  # names this loader's buffers when a chunk arrives in the main process
        self.received: dict[tuple[int, int], torch.Tensor] = {}  # main process: (worker, slot) → the buffer it sent
        WorkerState._live[self.token] = self

    @classmethod
    def live(cls, token: str) -> WorkerState:
        return cls._live[token]

    def __getstate__(self) -> dict[str, Any]:  # what a spawned worker inherits: no buffers
        return {**self.__dict__, "received": {}}

    def busy(self, worker: int) -> np.ndarray:
        """Worker `worker`'s flags, one per slot: 1 from the worker's write until the main process lets go."""
        return np.frombuffer(self._busy, dtype=np.int64)[worker * MAX_SLOTS : (worker + 1) * MAX_SLOTS]

    def release(self, worker: int, slot: int) -> None:
        self.busy(worker)[slot] = 0

    @property
    def block(self) -> int:
        return int(self._array()[3])

    def _array(self) -> np.ndarray:
        return np.frombuffer(self._values, dtype=np.int64)

    def store(self, stream: ReplayStream, block: int) -> None:
        """Write the main process's position (call before asking workers for the epoch's batches)."""
        assert stream.versions is not None
        values = self._array()
        values[:_HEAD] = (stream.epoch, stream.step, stream.global_base, block)
        values[_HEAD : _HEAD + self.sources] = [_NONE if v is None else int(v) for v in stream.versions]
        values[_HEAD + self.sources :] = stream._start

    def load_into(self, stream: ReplayStream) -> None:
        """Give a worker's copy of the stream the main process's position."""
        values = self._array().copy()
        stream.epoch, stream.step, stream.global_base = (int(x) for x in values[:3])
        stream.versions = [None if v == _NONE else int(v) for v in values[_HEAD : _HEAD + self.sources]]
        stream._start = values[_HEAD + self.sources :].copy()
