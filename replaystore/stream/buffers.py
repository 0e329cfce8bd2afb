"""Recycled host memory for the batches a stream copies (mixtures, padded joins).

A fresh multi-megabyte numpy array is mapped by the allocator and every page is faulted in and
zeroed by the kernel on first write: for a 3-source mixture that page work cost about as much as
the copy itself. The pool hands out arrays over buffers it keeps, and takes a buffer back only when
the last array, view or tensor over it is freed, so a batch the training loop holds on to is never
overwritten. It is for pageable memory what torch's caching host allocator is for pinned memory.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

import numpy as np

GRAIN = 64 * 1024  # buffers are rounded up to this, so that chunks of slightly different sizes share buffers


class BufferPool:
    """Free buffers by size; at most `max_free_bytes` of them are kept (the rest go back to the allocator)."""

    def __init__(self, max_free_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_free_bytes = max_free_bytes
        self._free: dict[int, list[bytearray]] = {}
        self._free_bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised array; its buffer returns to the pool once nothing refers to it."""
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        size = -(-max(count * dtype.itemsize, 1) // GRAIN) * GRAIN
        with self._lock:
            spare = self._free.get(size)
            raw = spare.pop() if spare else None
            if raw is not None:
                self._free_bytes -= size
        if raw is None:
            raw = bytearray(size)
        # Views of `whole` (slices, reshapes, torch.from_numpy) keep `whole` itself alive, since its base
        # is not an array: `whole` dies exactly when the last of them does.
        whole = np.frombuffer(raw, np.uint8)
        weakref.finalize(whole, self._give_back, raw).atexit = False
        return whole[: count * dtype.itemsize].view(dtype).reshape(shape)

    def _give_back(self, raw: bytearray) -> None:
        with self._lock:
            if self._free_bytes + len(raw) <= self.max_free_bytes:
                self._free.setdefault(len(raw), []).append(raw)
                self._free_bytes += len(raw)

    @property
    def free_bytes(self) -> int:
        """Bytes held for reuse (what the pool costs in RAM beyond the batches in use)."""
        return self._free_bytes


OUTPUT = BufferPool()
