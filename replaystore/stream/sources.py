"""Where a stream's rows come from: a store table at a pinned version, a Lance dataset, or an Arrow table.

A `Source` is configuration (what to read, which columns, which rows, how to sample). Opening it at
a version gives a `Snapshot`: an immutable, positionally indexed view that the stream reads with
`read(positions)`. Contiguous requests continue one Lance scan (a sequential epoch costs what a raw
`to_batches` costs); scattered ones use `take`. A filtered table is resolved once per snapshot into
an in-memory Arrow table, so positions stay stable while other writers commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lance
import numpy as np
import pyarrow as pa

from replaystore.errors import ValidationError
from replaystore.lance_errors import is_denied
from replaystore.store import Store, Version, validate_name
from replaystore.stream.samplers import Sampler, Sequential
from replaystore.stream.tensors import to_arrays

SCAN_BATCH = 8192  # rows per Lance batch when continuing a scan: large enough to amortise, small enough to stay in cache
READ_AHEAD = 8  # steps the stream reads at once in its first chunk: one read covers up to that many runs
MAX_READ_AHEAD = 32  # at most; later chunks hold about CHUNK_BYTES of batches
CHUNK_BYTES = 8 * 1024 * 1024
SKIP_ROWS = 4 * SCAN_BATCH  # a gap a scan reads past rather than restarting (DataLoader workers interleave steps)
RETAIN_BYTES = 512 * 1024 * 1024  # a source read more than once per epoch is kept in memory up to this size

log = logging.getLogger("replaystore")


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
    return len(positions) > 0 and int(positions[-1]) - int(positions[0]) == len(positions) - 1 and bool(
        (np.diff(positions) == 1).all()
    )


@dataclass
class ArrowSnapshot:
    """An in-memory table; slices are zero-copy, gathers use Arrow's take kernel."""

    table: pa.Table
    num_rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_rows = self.table.num_rows

    def read(self, positions: np.ndarray) -> pa.Table:
        if contiguous(positions):
            return self.table.slice(int(positions[0]), len(positions))
        return self.table.take(pa.array(positions))

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        return arrays_of(self.read(positions))


@dataclass
class LanceSnapshot:
    """A Lance dataset at one version; keeps one open scan so that consecutive runs stream.

    Each scanned batch is converted to numpy once and sliced into the pieces reads ask for
    (columns padded to a batch-wide width, variable-length lists, are converted piece by piece).
    A source the epoch reads more than once (a replay buffer smaller than its share) is kept in
    memory after its first pass from row 0 (`retain`), so later passes are views, not new decodes."""

    dataset: lance.LanceDataset
    columns: list[str] | None
    num_rows: int = field(init=False)
    _flat: bool = field(init=False, repr=False)
    _scan: Iterator[pa.RecordBatch] | None = field(default=None, init=False, repr=False)
    _head: Any = field(default=None, init=False, repr=False)  # unread rest of a scanned batch
    _left: int = field(default=0, init=False, repr=False)  # its rows
    _next: int = field(default=-1, init=False, repr=False)  # position of _head's first row
    _kept: list[Any] | None = field(default=None, init=False, repr=False)  # converted batches of the first pass
    _kept_rows: list[int] = field(default_factory=list, init=False, repr=False)  # their first positions
    _kept_bytes: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_rows = self.dataset.count_rows()
        schema = self.dataset.schema
        self._flat = _flat(pa.schema([schema.field(c) for c in self.columns]) if self.columns else schema)

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """Ascending runs (a sequential stripe, possibly wrapping to row 0) stream from the open scan;
        anything else is a `take`."""
        cuts = np.flatnonzero(np.diff(positions) != 1) + 1
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(positions)]))
        firsts, lasts = positions[starts], positions[ends - 1]
        forward = (firsts[1:] > lasts[:-1]) | (firsts[1:] == 0)
        if len(starts) > 2 * MAX_READ_AHEAD or not forward.all():
            return arrays_of(self.dataset.take(positions, columns=self.columns))
        parts: list[Any] = []
        for first, a, b in zip(firsts, starts, ends):
            parts += self._run(int(first), int(b - a))
        return parts if self._flat else [to_arrays(p) for p in parts]

    def retain(self) -> None:
        """Keep what the first pass from row 0 decodes (up to `RETAIN_BYTES`): a source smaller than its
        share of the epoch wraps around, and later passes are then served from memory, not decoded again."""
        if self._kept is None and self._next <= 0:
            self._kept, self._kept_rows, self._kept_bytes = [], [0], 0

    def _retained(self) -> bool:
        return self._kept is not None and self._kept_rows[-1] == self.num_rows and self.num_rows > 0

    def _run(self, start: int, count: int) -> list[Any]:
        """Rows [start, start+count) from the open scan, continuing, skipping ahead or restarting it."""
        if self._retained():
            return self._from_memory(start, count)
        if self._scan is not None and self._next <= start <= self._next + SKIP_ROWS:
            self._rows(start - self._next)  # read past the rows other workers take
        elif start != self._next:
            offset = {"offset": start} if start else {}  # a plain scan from row 0 is Lance's fastest path
            self._scan = iter(self.dataset.to_batches(columns=self.columns, batch_size=SCAN_BATCH, **offset))
            self._head, self._left = None, 0
        self._next = start
        return self._rows(count)

    def _rows(self, count: int) -> list[Any]:
        """The next `count` rows of the open scan, as zero-copy slices of its (converted) batches."""
        parts, have = [], 0
        while have < count:
            if self._left == 0:
                batch = next(self._scan)  # type: ignore[arg-type]
                self._head, self._left = to_arrays(batch) if self._flat else batch, batch.num_rows
                self._keep(batch, self._next + have)
            take = min(count - have, self._left)
            parts.append(_cut(self._head, 0, take))
            self._head, self._left = _cut(self._head, take, self._left), self._left - take
            have += take
        self._next += count
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
        return {**self.__dict__, "_scan": None, "_head": None, "_left": 0, "_next": -1, "_kept": None, "_kept_rows": []}


@contextlib.contextmanager
def _pin_if_allowed(store: Store, table: str, version: int) -> Iterator[int]:
    """`store.pin`, or, where the storage refuses the pin's tag (read-only credentials, normal for a
    training job), one warning and the epoch read unpinned: a reader must not need write access."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(store.pin(table, version))
        except (OSError, ValueError) as exc:
            if not is_denied(exc):
                raise
            log.warning(
                "could not pin %s version %d in %s (the storage refused the pin's tag: read-only credentials?); "
                "reading it unpinned: the version is not protected from cleanup during the epoch (Source(..., pin=False) skips the attempt)",
                table, version, store.uri,
            )  # fmt: skip
        yield version


def _cut(piece: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of a record batch or of a dict of numpy columns (views; lists are sliced)."""
    if isinstance(piece, pa.RecordBatch):
        return piece.slice(start, stop - start)
    return {k: v[start:stop] for k, v in piece.items()}


@dataclass
class Source:
    """One input of a stream. Build it with `from_store`, `from_lance` or `from_arrow`."""

    name: str
    store: Store | None = None
    table: str | None = None
    uri: str | None = None
    arrow: pa.Table | None = None
    version: Version | None = None  # fixed version or tag; None = the latest at each epoch
    columns: Sequence[str] | None = None
    filter: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    sampler: Sampler = field(default_factory=Sequential)
    id_column: str | None = None  # sample ids, for priorities written back to the store
    cache: bool | str = False  # True (or a directory): serve reads from a memory-mapped hot tier
    storage_options: Mapping[str, str] | None = None
    pin: bool = True  # hold each epoch's version against cleanup with a tag (a write; see `pinned`)
    _opened: Any = field(default=None, init=False, repr=False, compare=False)  # the dataset `resolve` opened

    def __post_init__(self) -> None:
        validate_name(self.name)
        if sum(x is not None for x in (self.table, self.uri, self.arrow)) != 1:
            raise ValidationError("source", "give exactly one of a store table, a Lance URI or an Arrow table")
        if self.table is not None and self.store is None:
            raise ValidationError("store", f"source '{self.name}' names table '{self.table}' but no store")
        if self.columns is not None and (isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns)):
            raise ValidationError("columns", "must be a list of column names")
        names = self._schema().names
        wanted = [*(self.columns or []), *self.rename, *([self.id_column] if self.id_column else [])]
        if self.store is not None and self.table is not None and self.version is None:
            self.store.require_columns(self.table, wanted)  # an outdated table: name the migrate command
        for column in wanted:
            if column not in names:
                raise ValidationError("columns", f"source '{self.name}' has no column '{column}' (has: {', '.join(names)})")

    @classmethod
    def from_store(cls, store: Store, table: str, **settings: Any) -> Source:
        return cls(settings.pop("name", table), store=store, table=table, **settings)

    @classmethod
    def from_lance(cls, name: str, uri: str | lance.LanceDataset, **settings: Any) -> Source:
        return cls(name, uri=uri.uri if isinstance(uri, lance.LanceDataset) else str(uri), **settings)

    @classmethod
    def from_arrow(cls, name: str, table: Any, **settings: Any) -> Source:
        if not isinstance(table, pa.Table):
            table = pa.table(table)
        return cls(name, arrow=table, **settings)

    # -- versions ---------------------------------------------------------------------------

    def dataset(self, version: Version | None = None) -> lance.LanceDataset:
        if self.store is not None and self.table is not None:
            return self.store.dataset(self.table, version)
        return lance.dataset(self.uri, version=version, storage_options=dict(self.storage_options or {}) or None)

    def _schema(self) -> pa.Schema:
        return self.arrow.schema if self.arrow is not None else self.dataset(self.version).schema

    def resolve(self) -> int | None:
        """The version the next epoch reads: the fixed one, else the latest (None for Arrow tables).
        The dataset opened here is kept for `open` at that version, which saves an open (~1 ms) per
        source per epoch."""
        if self.arrow is not None:
            return None
        self._opened = self.dataset(self.version)
        return int(self._opened.version)

    def __getstate__(self) -> dict[str, Any]:  # an open dataset stays in the process that opened it
        return {**self.__dict__, "_opened": None}

    def pinned(self, version: int | None) -> contextlib.AbstractContextManager[Any]:
        """Hold `version` against store cleanup while an epoch reads it (unless `pin=False`)."""
        if self.pin and self.store is not None and self.table is not None and version is not None:
            return _pin_if_allowed(self.store, self.table, version)
        return contextlib.nullcontext(version)

    def open(self, version: int | None) -> Snapshot:
        """The rows this source yields at `version`, projected, filtered and renamed."""
        if self.arrow is not None:
            table = self.arrow.select(list(self.columns)) if self.columns else self.arrow
            if self.filter:
                import polars as pl

                table = pl.from_arrow(table).sql(f"SELECT * FROM self WHERE {self.filter}").to_arrow()
            return ArrowSnapshot(self.renamed(table))
        if self.cache:
            from replaystore.stream.cache import HotCache

            return HotCache(self, version, None if self.cache is True else Path(str(self.cache))).open()
        opened = self._opened
        ds = opened if opened is not None and version is not None and opened.version == version else self.dataset(version)
        if self.filter or self.rename:
            return ArrowSnapshot(self.renamed(ds.to_table(columns=self._columns(), filter=self.filter)))
        return LanceSnapshot(ds, self._columns())

    def _columns(self) -> list[str] | None:
        return list(self.columns) if self.columns else None

    def renamed(self, table: pa.Table) -> pa.Table:
        """`table` with this source's columns renamed as the stream yields them."""
        return table.rename_columns([self.rename.get(c, c) for c in table.column_names]) if self.rename else table
