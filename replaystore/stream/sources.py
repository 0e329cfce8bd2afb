"""Where a stream's rows come from: one type per kind of source.

`StoreSource` (a store table, pinned per epoch), `LanceSource` (any Lance dataset) and `ArrowSource`
(an in-memory table) share `Source`'s configuration (columns, filter, rename, sampler, ids); build
them with `Source.from_store`, `from_lance` or `from_arrow`. Opening one at a version gives a
`Snapshot` (`snapshots.py`): an immutable, positionally indexed view the stream reads. A filtered
table is resolved once per snapshot into an in-memory Arrow table, so positions stay stable while
other writers commit. Each source also describes itself to Ray Data (`to_ray`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import lance
import pyarrow as pa

from replaystore.errors import ValidationError
from replaystore.lance_errors import is_denied
from replaystore.store import Store, Version, validate_name
from replaystore.stream.samplers import Sampler, Sequential, as_sampler
from replaystore.stream.snapshots import ArrowSnapshot, LanceSnapshot, Snapshot

READ_AHEAD = 8  # steps the stream reads at once in its first chunk: one read covers up to that many runs
CHUNK_BYTES = 8 * 1024 * 1024

log = logging.getLogger("replaystore")


@contextlib.contextmanager
def _pin_if_allowed(store: Store, table: str, version: int, opened: lance.LanceDataset | None) -> Iterator[int]:
    """`store.pin`, or, where the storage refuses the pin's tag (read-only credentials, normal for a
    training job), one warning and the epoch read unpinned: a reader must not need write access."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(store.pin(table, version, opened))
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
    """One input of a stream: what to read and how to sample it. Build it with `from_store`,
    `from_lance` or `from_arrow`; the kind-specific parts live in the subclasses."""

    name: str
    _: KW_ONLY
    columns: Sequence[str] | None = None
    filter: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    sampler: Sampler = field(default_factory=Sequential)
    id_column: str | None = None  # sample ids, for priorities written back to the store

    def __post_init__(self) -> None:
        if type(self) is Source:
            raise ValidationError("source", "build a source with Source.from_store, Source.from_lance or Source.from_arrow")
        validate_name(self.name)
        self.sampler = as_sampler(self.sampler)
        if self.columns is not None and (isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns)):
            raise ValidationError("columns", "must be a list of column names")
        names = self.schema().names
        for column in self.wanted():
            if column not in names:
                raise ValidationError("columns", f"source '{self.name}' has no column '{column}' (has: {', '.join(names)})")

    @classmethod
    def from_store(cls, store: Store, table: str, **settings: Any) -> StoreSource:
        return StoreSource(settings.pop("name", table), store=store, table=table, **settings)

    @classmethod
    def from_lance(cls, name: str, uri: str | lance.LanceDataset, **settings: Any) -> LanceSource:
        return LanceSource(name, uri=uri.uri if isinstance(uri, lance.LanceDataset) else str(uri), **settings)

    @classmethod
    def from_arrow(cls, name: str, table: Any, **settings: Any) -> ArrowSource:
        return ArrowSource(name, arrow=table if isinstance(table, pa.Table) else pa.table(table), **settings)

    def wanted(self) -> list[str]:
        """Columns this configuration names (projection, renames, ids)."""
        return [*(self.columns or []), *self.rename, *([self.id_column] if self.id_column else [])]

    def renamed(self, table: pa.Table) -> pa.Table:
        """`table` with this source's columns renamed as the stream yields them."""
        return table.rename_columns([self.rename.get(c, c) for c in table.column_names]) if self.rename else table

    def _columns(self) -> list[str] | None:
        return list(self.columns) if self.columns else None

    # -- what each kind provides ---------------------------------------------------------------

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def resolve(self) -> int | None:
        """The version the next epoch reads (None where the source has no versions)."""
        return None

    def resolves_to(self, version: int | None) -> bool:
        """Whether the next epoch would read `version` again (a pin on it is worth keeping)."""
        return self.resolve() == version

    @property
    def holds_versions(self) -> bool:
        """Whether `pinned` holds anything against cleanup (a store table's pin)."""
        return False

    def pinned(self, version: int | None) -> contextlib.AbstractContextManager[Any]:
        """Hold `version` against cleanup while an epoch reads it (only store tables can be held)."""
        return contextlib.nullcontext(version)

    def open(self, version: int | None) -> Snapshot:
        """The rows this source yields at `version`, projected, filtered and renamed."""
        raise NotImplementedError

    def to_ray(self, data: ModuleType, version: int | None) -> Any:
        """The same rows as a Ray Data dataset (`data` is `ray.data`: only `ray_train` imports Ray)."""
        raise NotImplementedError


@dataclass
class ArrowSource(Source):
    """An in-memory Arrow table: no versions, nothing to pin."""

    _: KW_ONLY
    arrow: pa.Table

    def schema(self) -> pa.Schema:
        return self.arrow.schema

    def rows(self) -> pa.Table:
        """The projected, filtered and renamed rows."""
        table = self.arrow.select(list(self.columns)) if self.columns else self.arrow
        if self.filter:
            import polars as pl

            table = pl.from_arrow(table).sql(f"SELECT * FROM self WHERE {self.filter}").to_arrow()
        return self.renamed(table)

    def open(self, version: int | None) -> ArrowSnapshot:
        return ArrowSnapshot(self.rows())

    def to_ray(self, data: ModuleType, version: int | None) -> Any:
        return data.from_arrow(self.rows())


@dataclass
class LanceBacked(Source):
    """A Lance dataset read at one version per epoch, straight or through the memory-mapped hot tier."""

    _: KW_ONLY
    version: Version | None = None  # fixed version or tag; None = the latest at each epoch
    cache: bool | str = False  # True (or a directory): serve reads from a memory-mapped hot tier
    _opened: Any = field(default=None, init=False, repr=False, compare=False)  # the dataset `resolve` or `open` opened last

    @property
    def location(self) -> str:
        """The dataset's URI."""
        raise NotImplementedError

    @property
    def options(self) -> dict[str, str]:
        """Storage options for reading `location`."""
        raise NotImplementedError

    def dataset(self, version: Version | None = None) -> lance.LanceDataset:
        return lance.dataset(self.location, version=version, storage_options=self.options or None)

    def schema(self) -> pa.Schema:
        return self.dataset(self.version).schema

    def resolve(self) -> int:
        """The fixed version, else the latest. The dataset opened here is kept for `open` at that
        version, which saves an open (~1 ms) per source per epoch."""
        self._opened = self.dataset(self.version)
        return int(self._opened.version)

    def resolves_to(self, version: int | None) -> bool:
        """For "the latest", asked of the dataset already open (its latest version number, no open)."""
        if self.version is None and self._opened is not None:
            return int(self._opened.latest_version) == version
        return self.resolve() == version

    def __getstate__(self) -> dict[str, Any]:  # an open dataset stays in the process that opened it
        return {**self.__dict__, "_opened": None}

    def open(self, version: int | None) -> Snapshot:
        if self.cache:
            from replaystore.stream.cache import HotCache

            return HotCache(self, version, None if self.cache is True else Path(str(self.cache))).open()
        opened = self._opened
        ds = opened if opened is not None and version is not None and opened.version == version else self.dataset(version)
        self._opened = ds  # a loader's worker opens each version once, not once per epoch
        if self.filter or self.rename:
            return ArrowSnapshot(self.renamed(ds.to_table(columns=self._columns(), filter=self.filter)))
        return LanceSnapshot(ds, self._columns())

    def to_ray(self, data: ModuleType, version: int | None) -> Any:
        # the filter as a scanner option: read_lance's own `filter` argument is deprecated (Ray 2.60), and
        # Ray's expression filters reach Lance as pyarrow's rendering of them, not as the SQL users wrote
        scan = {"filter": self.filter} if self.filter else None
        dataset = data.read_lance(self.location, version=version, columns=self._columns(), scanner_options=scan, storage_options=self.options or None)
        # The stream's column names; a map, since Ray's rename_columns plans over read_lance's full schema.
        return dataset.map_batches(self.renamed, batch_format="pyarrow") if self.rename else dataset


@dataclass
class LanceSource(LanceBacked):
    """Any Lance dataset by URI (local or object storage)."""

    _: KW_ONLY
    uri: str
    storage_options: Mapping[str, str] | None = None

    @property
    def location(self) -> str:
        return self.uri

    @property
    def options(self) -> dict[str, str]:
        return dict(self.storage_options or {})


@dataclass
class StoreSource(LanceBacked):
    """A table of a replaystore store: read through the store's contract, each epoch's version pinned."""

    _: KW_ONLY
    store: Store
    table: str
    pin: bool = True  # hold each epoch's version against cleanup with a tag (a write; see `pinned`)

    def __post_init__(self) -> None:
        if not isinstance(self.store, Store):
            raise ValidationError("store", f"source '{self.name}' names table '{self.table}' but no store")
        if self.version is None:
            self.store.require_columns(self.table, self.wanted())  # an outdated table: name the migrate command
        super().__post_init__()

    @property
    def location(self) -> str:
        return self.store.table_uri(self.table)

    @property
    def options(self) -> dict[str, str]:
        return dict(self.store.storage_options or {})

    def dataset(self, version: Version | None = None) -> lance.LanceDataset:
        return self.store.dataset(self.table, version)

    @property
    def holds_versions(self) -> bool:
        return self.pin

    def pinned(self, version: int | None) -> contextlib.AbstractContextManager[Any]:
        """Hold `version` against store cleanup while an epoch reads it (unless `pin=False`)."""
        if self.pin and version is not None:
            return _pin_if_allowed(self.store, self.table, version, self._opened)
        return contextlib.nullcontext(version)
