"""What a source is at one version: an immutable, positionally indexed view the stream reads.

`ArrowSnapshot` serves an in-memory table; `LanceSnapshot` a Lance version, where contiguous
requests continue one scan (a sequential epoch costs what a raw `to_batches` costs) and scattered
ones use `take`. The hot tier's memory-mapped snapshot lives in `cache.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import lance
import numpy as np
import pyarrow as pa

from replaystore.stream.tensors import to_arrays

SCAN_BATCH = 8192  # rows per Lance batch when continuing a scan: large enough to amortise, small enough to stay in cache
SKIP_ROWS = 4 * SCAN_BATCH  # a gap a scan reads past rather than restarting (DataLoader workers interleave steps)
MAX_READ_AHEAD = 32  # steps one read covers at most; later chunks hold about CHUNK_BYTES of batches (sources.py)
RETAIN_BYTES = 512 * 1024 * 1024  # a source read more than once per epoch is kept in memory up to this size
LOCAL_IO_BUFFER = 32 * 1024 * 1024  # bytes Lance may read ahead of a scan of local files (see `io_buffer_size`)
LANCE_IO_BUFFER_ENV = "LANCE_DEFAULT_IO_BUFFER_SIZE"


def io_buffer_size(uri: str) -> int | None:
    """How far ahead of the stream Lance may read a table at `uri`; None leaves it to Lance.

    Lance's default, 2 GiB per scan, is sized for 256 concurrent object-store reads. Local reads keep
    up with it, so a scan of local files reads the whole table ahead into fresh buffers that the kernel
    faults in: a training process's memory grew by the table's size per source each epoch and each
    epoch's first batch waited on that reading (`python -m benchmarks.profile_streaming readahead`).
    Local files get `LOCAL_IO_BUFFER`, several pages ahead; object stores keep Lance's default, and
    `LANCE_DEFAULT_IO_BUFFER_SIZE`, where the user set it, decides for every scan."""
    remote = "://" in uri and not uri.startswith("file://")
    return None if remote or LANCE_IO_BUFFER_ENV in os.environ else LOCAL_IO_BUFFER


@dataclass
class Kept:
    """Where a stream keeps a source's pass decoded whole between epochs. A snapshot that completes its
    pass from row 0 leaves (version, converted batches, their first positions) here; the next epoch's
    snapshot of the same version reads them instead of decoding the source again. What is left here is
    never changed, only replaced as one tuple, so snapshots of concurrent iterations can share it."""

    whole: tuple[int, list[Any], list[int]] | None = None

    def clear(self) -> None:
        self.whole = None


class Snapshot(Protocol):
    num_rows: int

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """The rows at `positions`, in order, as consecutive pieces of numpy columns (`to_arrays`)."""
        ...


def arrays_of(table: pa.Table) -> list[dict[str, Any]]:
    return [to_arrays(b) for b in table.to_batches()]


def _flat(schema: pa.Schema) -> bool:
    """Whether every column converts row by row (no padding to a batch-wide width), so that one
    conversion of a scanned batch can be sliced into pieces."""

    def flat(kind: pa.DataType) -> bool:
        if pa.types.is_fixed_size_list(kind):
            return flat(kind.value_type)
        return not (pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))

    return all(flat(f.type) for f in schema)


def contiguous(positions: np.ndarray) -> bool:
    """True when positions are one ascending run (a slice, not a gather)."""
    return len(positions) > 0 and int(positions[-1]) - int(positions[0]) == len(positions) - 1 and bool((np.diff(positions) == 1).all())


def fixed_numbers(kind: pa.DataType) -> bool:
    """Integers or floats, or fixed-size lists of them: a column numpy holds as one N-D array."""
    while pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def numpy_columns(table: pa.Table) -> dict[str, np.ndarray] | None:
    """Every column as a numpy view of its buffer, when every one is `fixed_numbers` in one chunk
    without nulls (None otherwise). Rows indexed out of these views are what `to_arrays` makes of
    a `take` of them, without building and converting an Arrow table for every read."""
    if not all(fixed_numbers(f.type) for f in table.schema) or any(c.num_chunks != 1 or c.null_count for c in table.columns):
        return None
    return to_arrays(table)


def gather(columns: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
    """The rows at `positions` of each column: a view for one ascending run, numpy indexing otherwise
    (`take` for a column of vectors, which copies row by row where indexing goes element by element:
    a third less time for 256 scattered 64-d rows)."""
    if contiguous(positions):
        rows = slice(int(positions[0]), int(positions[0]) + len(positions))
        return {name: np.asarray(values[rows]) for name, values in columns.items()}  # plain arrays, also of a memmap
    return {name: np.asarray(np.take(values, positions, axis=0) if values.ndim > 1 else values[positions]) for name, values in columns.items()}


@dataclass
class ArrowSnapshot:
    """An in-memory table; slices are zero-copy. Gathers index numpy views of the columns where
    `numpy_columns` has them (prioritized and uniform replay read a few hundred scattered rows a
    step: Arrow's take kernel and the conversion of its result cost more than the rows), and use
    Arrow's take kernel otherwise."""

    table: pa.Table
    num_rows: int = field(init=False)
    columns: dict[str, np.ndarray] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_rows = self.table.num_rows
        self.columns = numpy_columns(self.table)

    def read(self, positions: np.ndarray) -> pa.Table:
        if contiguous(positions):
            return self.table.slice(int(positions[0]), len(positions))
        return self.table.take(pa.array(positions))

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        if self.columns is not None:
            return [gather(self.columns, positions)]
        return arrays_of(self.read(positions))


@dataclass
class LanceSnapshot:
    """A Lance dataset at one version; keeps one open scan so that consecutive runs stream.

    Each scanned batch is converted to numpy once and sliced into the pieces reads ask for
    (columns padded to a batch-wide width, variable-length lists, are converted piece by piece).
    A source the epoch reads more than once (a replay buffer smaller than its share) is kept in
    memory after its first pass from row 0 (`retain`), so later passes are views, not new decodes;
    and, through the stream's `Kept`, so are the passes of later epochs of the same version."""

    dataset: lance.LanceDataset
    columns: list[str] | None
    window: int | None = None  # rows a new scan covers at least; None: a scan from row 0 runs to the end
    num_rows: int = field(init=False)
    _flat: bool = field(init=False, repr=False)
    _scan: Iterator[pa.RecordBatch] | None = field(default=None, init=False, repr=False)
    _head: Any = field(default=None, init=False, repr=False)  # unread rest of a scanned batch
    _left: int = field(default=0, init=False, repr=False)  # its rows
    _next: int = field(default=-1, init=False, repr=False)  # position of _head's first row
    _kept: list[Any] | None = field(default=None, init=False, repr=False)  # converted batches of the first pass
    _kept_rows: list[int] = field(default_factory=list, init=False, repr=False)  # their first positions
    _kept_bytes: int = field(default=0, init=False, repr=False)
    _shelf: Kept | None = field(default=None, init=False, repr=False)  # where a completed pass is left for later epochs
    _io_buffer: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_rows = self.dataset.count_rows()
        self._io_buffer = io_buffer_size(self.dataset.uri)
        schema = self.dataset.schema
        self._flat = _flat(pa.schema([schema.field(c) for c in self.columns]) if self.columns else schema)

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """Ascending runs (a rank's slices of a sequential epoch, possibly wrapping to row 0) stream from
        the open scan; anything else is a `take`."""
        cuts = np.flatnonzero(np.diff(positions) != 1) + 1
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(positions)]))
        firsts, lasts = positions[starts], positions[ends - 1]
        forward = (firsts[1:] > lasts[:-1]) | (firsts[1:] <= SKIP_ROWS)  # on, or a new pass from (near) row 0
        if not self._retained() and (len(starts) > 2 * MAX_READ_AHEAD or not forward.all()):
            return arrays_of(self.dataset.take(positions, columns=self.columns))
        parts: list[Any] = []
        for first, a, b in zip(firsts, starts, ends):
            parts += self._run(int(first), int(b - a))
        return parts if self._flat else [to_arrays(p) for p in parts]

    def retain(self, shelf: Kept | None = None) -> None:
        """Keep what the first pass from row 0 decodes (up to `RETAIN_BYTES`): a source smaller than its
        share of the epoch wraps around, and later passes are then served from memory, not decoded again.
        `shelf`: a pass of this version an earlier epoch completed is read from it (no decoding at all),
        and this one's is left there once complete; a pass of another version is dropped first."""
        if shelf is not None:
            whole = shelf.whole
            if whole is not None and whole[0] == self.dataset.version and whole[2][-1] == self.num_rows:
                _, self._kept, self._kept_rows = whole
                return
            shelf.clear()
            self._shelf = shelf
        if self._kept is None and self._next <= 0:
            self._kept, self._kept_rows, self._kept_bytes = [], [0], 0

    def _retained(self) -> bool:
        return self._kept is not None and self._kept_rows[-1] == self.num_rows and self.num_rows > 0

    def _keeping(self) -> bool:
        """Whether the open scan is still adding to an unbroken kept pass from row 0."""
        return self._scan is not None and self._kept is not None and len(self._kept_rows) > 1 and self._kept_rows[-1] == self._next + self._left

    def _run(self, start: int, count: int) -> list[Any]:
        """Rows [start, start+count) from the open scan, continuing, skipping ahead or restarting it."""
        if self._retained():
            return self._from_memory(start, count)
        if start < self._next and self._keeping():  # a new pass: finish decoding the one being kept
            self._rows(self.num_rows - self._next)
            if self._retained():
                return self._from_memory(start, count)
        if self._scan is None and self._kept is not None and start <= SKIP_ROWS:  # a pass to keep starts at row 0
            self._open(0, 0)
        if self._scan is not None and self._next <= start <= self._next + SKIP_ROWS:
            self._rows(start - self._next)  # read past the rows other ranks take
        elif start != self._next:
            self._open(start, count)
        return self._rows(count)

    def _open(self, start: int, count: int) -> None:
        """A new scan from `start`. From row 0 it is a plain scan, Lance's fastest path, unless the reader
        set a `window` (a loader worker reads only its blocks); from elsewhere it is limited to the rows
        about to be read (at least `SKIP_ROWS`, or the window): an open-ended scan reads ahead in the
        background (`io_buffer_size`), work a reader of blocks of steps throws away."""
        window = (start, max(count, self.window or SKIP_ROWS)) if start or self.window else (None, None)
        self._scan = iter(
            self.dataset.to_batches(columns=self.columns, batch_size=SCAN_BATCH, offset=window[0], limit=window[1], io_buffer_size=self._io_buffer)
        )
        self._head, self._left, self._next = None, 0, start

    def _rows(self, count: int) -> list[Any]:
        """The next `count` rows of the open scan, as zero-copy slices of its (converted) batches."""
        parts, end = [], self._next + count
        while self._next < end:
            if self._left == 0:
                batch = next(self._scan, None) if self._scan is not None else None
                if batch is None:  # a limited scan ran out: continue with another
                    self._open(self._next, end - self._next)
                    continue
                self._head, self._left = to_arrays(batch) if self._flat else batch, batch.num_rows
                self._keep(batch, self._next)
            take = min(end - self._next, self._left)
            parts.append(_cut(self._head, 0, take))
            self._head, self._left = _cut(self._head, take, self._left), self._left - take
            self._next += take
        return parts

    def _keep(self, batch: pa.RecordBatch, first: int) -> None:
        """Add the batch just read (its first row at `first`) to the pass kept in memory, while that pass
        continues unbroken from row 0."""
        if self._kept is None or self._kept_rows[-1] != first:
            return
        self._kept_bytes += batch.nbytes
        if self._kept_bytes > RETAIN_BYTES:  # too large to keep: later passes decode again
            self._kept, self._kept_rows = None, []
            return
        self._kept.append(self._head)
        self._kept_rows.append(self._kept_rows[-1] + batch.num_rows)
        if self._shelf is not None and self._kept_rows[-1] == self.num_rows:  # complete: later epochs start from it
            self._shelf.whole = (self.dataset.version, self._kept, self._kept_rows)

    def _from_memory(self, start: int, count: int) -> list[Any]:
        """Rows [start, start+count) as views of the kept batches."""
        parts, at = [], int(np.searchsorted(self._kept_rows, start, side="right")) - 1
        while count > 0:
            first, stop = self._kept_rows[at], self._kept_rows[at + 1]
            take = min(count, stop - start)
            parts.append(_cut(self._kept[at], start - first, start - first + take))  # type: ignore[index]
            start, count, at = start + take, count - take, at + 1
        return parts

    def __getstate__(self) -> dict[str, Any]:  # an open scan cannot cross a process boundary
        return {**self.__dict__, "_scan": None, "_head": None, "_left": 0, "_next": -1, "_kept": None, "_kept_rows": [], "_shelf": None}


def _cut(piece: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of a record batch or of a dict of numpy columns (views; lists are sliced)."""
    if isinstance(piece, pa.RecordBatch):
        return piece.slice(start, stop - start)
    return {k: v[start:stop] for k, v in piece.items()}
