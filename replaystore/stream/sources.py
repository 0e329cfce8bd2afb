"""Where a stream's rows come from: a store table at a pinned version, a Lance dataset, or an Arrow table.

A `Source` is configuration (what to read, which columns, which rows, how to sample). Opening it at
a version gives a `Snapshot` (`snapshots.py`): an immutable, positionally indexed view that the
stream reads with `read(positions)`. A filtered table is resolved once per snapshot into an
in-memory Arrow table, so positions stay stable while other writers commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from replaystore.errors import ValidationError
from replaystore.lance_errors import is_denied
from replaystore.store import Store, Version, validate_name
from replaystore.stream.samplers import Sampler, Sequential
from replaystore.stream.snapshots import ArrowSnapshot, LanceSnapshot, Snapshot

READ_AHEAD = 8  # steps the stream reads at once in its first chunk: one read covers up to that many runs
CHUNK_BYTES = 8 * 1024 * 1024

log = logging.getLogger("replaystore")


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
