"""A table for the length of one operation: its dataset opened once and its contract resolved once.

Store calls take a table *name*, and every call used to open the table afresh and re-derive its
kind from the stored schema: one exemplar `add` opened Lance datasets seven times. A `Table` holds
the version it opened (and, after each of its own commits, the version that commit made), so a
read-check-write sequence opens the table once; a retry after a concurrent commit opens it again,
as it must. Like Lance's `ds.tags` / `ds.optimize` accessors it is a thin wrapper: Arrow in, Arrow out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import lance
import numpy as np
import pyarrow as pa
from lance.fragment import FragmentMetadata, write_fragments
from lance.schema import LanceSchema

from replaystore import schemas
from replaystore.errors import CommitConflictError, SchemaOutdatedError, ValidationError
from replaystore.lance_errors import is_conflict, is_denied, is_version_gone, missing_column, user_input
from replaystore.retry import MAX_ATTEMPTS, backoff

if TYPE_CHECKING:
    from replaystore.store import Store

T = TypeVar("T")

Version = int | str

PAGE_BYTES = 4 * 1024 * 1024  # about what one page of a column holds in the data files writes leave


@dataclass(frozen=True)
class Edit:
    """One change planned against the version a writer read: rows to delete (a SQL predicate), rows to
    insert, and schema metadata to set. `Table.atomically` commits it only onto that same version."""

    delete: str | None = None
    insert: pa.Table | None = None
    metadata: Mapping[str, str] | None = None

    @property
    def empty(self) -> bool:
        return self.delete is None and (self.insert is None or self.insert.num_rows == 0) and not self.metadata


class VersionMovedError(CommitConflictError):
    """Another writer committed after the version an edit was planned on: plan again."""


@dataclass(frozen=True)
class SchemaGap:
    """How far a table's stored schema is behind its kind's schema file (`Store.migrate` closes it)."""

    table: str
    stored: int
    current: int
    missing: tuple[str, ...]  # columns the schema file has and the table lacks

    def error(self) -> SchemaOutdatedError:
        adds = f" (adds columns {', '.join(self.missing)})" if self.missing else ""
        return SchemaOutdatedError(
            f"table '{self.table}' has schema v{self.stored}, this replaystore needs v{self.current}{adds}: "
            f"run 'replaystore migrate {self.table}' (or Store.migrate('{self.table}'))"
        )


@dataclass(frozen=True)
class TableInfo:
    """What `replaystore tables` prints for one table."""

    name: str
    kind: str | None
    rows: int
    bytes: int
    version: int
    fragments: int


class Table:
    """One table of a store, at the version it was opened at (`Store.table(name)`: the latest).

    Reads see that version; writes commit on top of it and move the handle to the version they
    made. A handle opened at an older version (`Store.table(name, version)`) only reads. Use one
    handle for one operation: a handle kept for long reads an ever older version (`refresh()`).
    """

    def __init__(self, store: Store, name: str, ds: lance.LanceDataset, latest: bool = True) -> None:
        self.store = store
        self.name = name
        self._ds = ds
        self._latest = latest
        self._schema: pa.Schema | None = None

    def __repr__(self) -> str:
        return f"Table({self.name!r}, version={self.version}, store={self.store.uri!r})"

    @property
    def dataset(self) -> lance.LanceDataset:
        """The Lance dataset at this handle's version."""
        return self._ds

    @property
    def version(self) -> int:
        return int(self._ds.version)

    @property
    def schema(self) -> pa.Schema:
        """The stored Arrow schema, converted once per version (Lance converts it anew on each `.schema`)."""
        if self._schema is None:
            self._schema = self._ds.schema
        return self._schema

    @property
    def kind(self) -> str | None:
        return schemas.kind_of(self.schema)

    def refresh(self) -> Table:
        """Move to the latest version (another writer may have committed); returns self."""
        self._moved_to(self.store._open(self.name))
        return self

    def _moved_to(self, ds: lance.LanceDataset) -> None:
        self._ds = ds
        self._schema = None

    # -- the contract ---------------------------------------------------------------------------

    def schema_gap(self) -> SchemaGap | None:
        """How this version's stored schema falls behind its kind's schema file; None when current (or kindless)."""
        schema = self.schema
        kind = schemas.kind_of(schema)
        if kind is None:
            return None
        spec = schemas.load_spec(kind)
        stored = schema_version(schema)
        if stored >= spec.schema_version:
            return None
        target = spec.arrow_schema(schemas.params_of(schema))
        return SchemaGap(self.name, stored, spec.schema_version, tuple(f.name for f in target if schema.get_field_index(f.name) < 0))

    def require_columns(self, columns: Iterable[str]) -> None:
        """Refuse, in one line naming `replaystore migrate`, a read that needs columns this table lacks
        only because its stored schema is older than this code's. Other absent columns are left to
        the caller's own error (an unknown column is not a migration's business)."""
        absent = {c for c in columns if self.schema.get_field_index(c) < 0}
        if not absent:
            return
        gap = self.schema_gap()
        if gap is not None and absent & set(gap.missing):
            raise gap.error()

    def check_writable(self) -> None:
        """Writes wait for an explicit `migrate` when the table lacks columns of this code's schema:
        migrating implicitly would make every writer a schema changer (and rows would lack them)."""
        if not self._latest:
            raise ValidationError("version", f"table '{self.name}' was opened at version {self.version} to read; open it without a version to write")
        gap = self.schema_gap()
        if gap is not None and gap.missing:
            raise gap.error()

    # -- reads ----------------------------------------------------------------------------------

    def read(self, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        """This version's rows (a projection / filtered part of them); never writes."""
        with self._reading(), named("filter"):
            return self._ds.to_table(columns=list(columns) if columns else None, filter=filter)

    def count(self, filter: str | None = None) -> int:
        with self._reading(), named("filter"):
            return int(self._ds.count_rows(filter=filter))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A read of the latest version that failed on a column the table lacks because its schema
        is older says so and names the migrate command; checked only when a read fails."""
        try:
            yield
        except (ValueError, OSError) as exc:
            column = missing_column(str(exc))
            if self._latest and column is not None:
                self.require_columns([column])
            raise

    def info(self) -> TableInfo:
        """Rows, bytes on storage (of the latest version's files), version and fragments."""
        versions = self._ds.versions()
        meta = versions[-1].get("metadata", {}) if versions else {}
        return TableInfo(
            name=self.name,
            kind=self.kind,
            rows=self.count(),
            bytes=int(meta.get("total_files_size", 0)),
            version=self.version,
            fragments=len(self._ds.get_fragments()),
        )

    # -- writes ---------------------------------------------------------------------------------

    def append(self, data: Any) -> int:
        """Validate `data` against the table's schema and append it as one new version; returns it."""
        table = self._conformed(data)
        if table.num_rows == 0:
            return self.version
        start = self._tries()

        def write() -> int:
            self._moved_to(lance.write_dataset(in_pages(table), start(), mode="append", storage_options=self.store.storage_options or None))
            return self.version

        return self.store._commit(self.name, write)

    def merge(
        self,
        data: Any,
        on: str | Sequence[str],
        *,
        update: bool = True,
        insert: bool = True,
        delete_unmatched: str | None = None,
    ) -> int:
        """Upsert rows keyed by `on` in one commit (matched rows replaced, new rows inserted).

        `delete_unmatched` (a SQL predicate) also deletes, in the same commit, the rows it matches
        that are not in `data`: replacing a whole group of rows (one ordering) atomically.
        """
        table = self._conformed(data)
        if table.num_rows == 0:
            return self.version
        start = self._tries()

        def write() -> int:
            ds = start()
            builder = ds.merge_insert(on)
            if update:
                builder = builder.when_matched_update_all()
            if insert:
                builder = builder.when_not_matched_insert_all()
            if delete_unmatched:
                builder = builder.when_not_matched_by_source_delete(delete_unmatched)
            builder.execute(table)  # moves `ds` to the version it commits
            self._moved_to(ds)
            return self.version

        return self.store._commit(self.name, write)

    def update(self, values: Mapping[str, str], where: str | None = None) -> int:
        """Set columns to SQL expressions (`{"freq": "freq + 1"}`) for rows matching `where`."""
        self.check_writable()
        for column in values:
            if self.schema.get_field_index(column) < 0:
                raise ValidationError(column, f"unknown column of table '{self.name}'")
        if where is not None:
            with named("where"):
                self._ds.scanner(filter=where).explain_plan()  # planned, not run: names a bad predicate before the values
        # Expressions bypass `conform`, so preview their results and check them before committing.
        with named("values"):
            preview = self._ds.to_table(columns=dict(values), filter=where, with_row_id=True).drop_columns(["_rowid"])
        schemas.check_computed(preview, self.schema)
        start = self._tries()

        def write() -> int:
            ds = start()
            ds.update(dict(values), where=where)
            self._moved_to(ds)
            return self.version

        return self.store._commit(self.name, write)

    def delete(self, where: str) -> int:
        """Delete rows matching a SQL predicate as one new version."""
        if not where or not where.strip():
            raise ValidationError("where", "a delete needs a predicate; use drop() to remove a whole table")
        self.check_writable()
        start = self._tries()

        def write() -> int:
            ds = start()
            ds.delete(where)
            self._moved_to(ds)
            return self.version

        with named("where"):
            return self.store._commit(self.name, write)

    def _conformed(self, data: Any) -> pa.Table:
        """`data` validated against this version's schema, once writes to it are allowed."""
        self.check_writable()
        return schemas.conform(data, self.schema)

    def _tries(self) -> Callable[[], lance.LanceDataset]:
        """Where each try of a write starts: the first from this handle's dataset (no open, Lance
        reuses its session and manifest), a retry after a conflict from the latest version."""
        first = [self._ds]
        return lambda: first.pop() if first else self.store._open(self.name)

    def atomically(self, plan: Callable[[lance.LanceDataset], tuple[Edit | None, T]], attempts: int = MAX_ATTEMPTS) -> tuple[int, T]:
        """Read-plan-write that no concurrent writer can interleave, on any machine.

        `plan` gets this handle's version (on a retry: the latest) and returns the `Edit` to make
        (None: nothing) and a result for the caller. The edit commits as the very next version or
        not at all: if any other change landed since `plan` read (another process, another
        machine), the commit is refused by Lance's own conflict detection and `plan` runs again on
        the new version. Errors raised by `plan` (a refused budget, bad input) propagate and nothing
        is written. Returns the committed (or, for no edit, the read) version and `plan`'s result.
        """
        for attempt in range(attempts):
            if attempt:
                self.refresh()
            self.check_writable()
            edit, result = plan(self._ds)
            if edit is None or edit.empty:
                return self.version, result
            try:
                self._moved_to(self._commit_onto(edit))
                return self.version, result
            except VersionMovedError:
                if attempt == attempts - 1:
                    raise
                backoff(attempt)
            except (OSError, ValueError) as exc:
                if not is_denied(exc):
                    raise
                raise self.store._denied(self.name) from None
        raise AssertionError("unreachable")

    def _commit_onto(self, edit: Edit) -> lance.LanceDataset:
        """Commit `edit` as version `version + 1` exactly, or raise `VersionMovedError`.

        Lance gives this two ways, and both keep the data files of untouched fragments:
        - a `Merge` commit (the full fragment list, with deletion files for cut rows and new
          fragments for inserts): Lance refuses it when any append, update, delete, compaction or
          merge landed after this version, and it keeps the table's indexes;
        - when a cut empties a whole fragment (which `Merge` may not drop), a strict `Overwrite`
          (`max_retries=0`: committed as `version + 1` or refused), which rewrites the
          fragments it cuts from and drops the table's indexes (the index flow rebuilds them).
        """
        ds = self._ds
        insert = None if edit.insert is None or edit.insert.num_rows == 0 else schemas.conform(edit.insert, self.schema)
        schema = self.schema
        if edit.metadata:
            schema = schema.with_metadata({**{k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}, **edit.metadata})
        lance_schema = LanceSchema.from_pyarrow(schema)
        fragments = ds.get_fragments()
        hits: dict[int, int] = {}
        if edit.delete is not None:
            with named("delete"):  # row addresses from a dataset scan: fragment id in the high 32 bits
                addresses = ds.to_table(columns=[], filter=edit.delete, with_row_address=True)["_rowaddr"].to_numpy()
            ids, counts = np.unique(addresses >> 32, return_counts=True)
            hits = dict(zip(ids.tolist(), counts.tolist()))
        next_id = max((f.fragment_id for f in fragments), default=-1) + 1
        operation: lance.LanceOperation.BaseOperation
        if not hits or all(hits.get(f.fragment_id, 0) < f.count_rows() for f in fragments):  # no fragment emptied
            kept: list[FragmentMetadata] = []
            for f in fragments:
                meta = f.delete(edit.delete) if edit.delete and f.fragment_id in hits else f.metadata
                assert meta is not None  # on this path no fragment loses all its rows
                kept.append(meta)
            operation = lance.LanceOperation.Merge([*kept, *self._fragments(insert, next_id)], lance_schema)
        else:
            clean = [f for f in fragments if f.fragment_id not in hits and f.metadata.deletion_file is None]
            rewrite = [f for f in fragments if f not in clean]
            survivors = ds.scanner(filter=f"({edit.delete}) IS NOT TRUE", fragments=rewrite).to_table().cast(self.schema)
            rows = pa.concat_tables([survivors, *([insert.cast(self.schema)] if insert is not None else [])])
            operation = lance.LanceOperation.Overwrite(schema, [f.metadata for f in clean] + self._fragments(rows, next_id))
        try:
            return lance.LanceDataset.commit(ds.uri, operation, read_version=ds.version, max_retries=0, storage_options=self.store.storage_options or None)
        except (OSError, ValueError, RuntimeError) as exc:
            if is_conflict(exc) or is_version_gone(exc):  # another commit landed, or cleanup removed the version planned on
                raise VersionMovedError(f"table changed after version {ds.version}: {str(exc).splitlines()[0][:200]}") from None
            raise

    def _fragments(self, rows: pa.Table | None, first_id: int) -> list[FragmentMetadata]:
        """Write `rows` as new data files of this table (pages of about `PAGE_BYTES`), numbered from `first_id`."""
        if rows is None or rows.num_rows == 0:
            return []
        written = write_fragments(
            in_pages(rows),
            self._ds.uri,
            schema=self.schema,
            data_storage_version=self._ds.data_storage_version,
            storage_options=self.store.storage_options or None,
        )
        for offset, meta in enumerate(written):
            meta.id = first_id + offset
        return written


def in_pages(table: pa.Table) -> pa.RecordBatchReader:
    """`table` as batches of about `PAGE_BYTES`. Lance (file format 2.1+) cuts pages at the batches it
    is handed: a 1M-row table written as one batch leaves one page per column, which a scan must read
    and decode whole before its first row (a stream of 1M 272-byte rows: ~2.8M rows/s from one page,
    ~6-7M from pages of a few MB, docs/streaming.md, "Table layout decides scan speed")."""
    rows = max(1, PAGE_BYTES * table.num_rows // max(1, table.nbytes))
    return table.to_reader(max_chunksize=rows)  # a reader in C++: Lance pulls batches without taking the GIL


def schema_version(schema: pa.Schema) -> int:
    """The schema version a table was written (or last migrated) with; 0 before versions were recorded."""
    return int((schema.metadata or {}).get(schemas.VERSION_KEY, b"0"))


@contextlib.contextmanager
def named(argument: str) -> Iterator[None]:
    """Lance reports a bad SQL predicate or expression as a generic error; name the argument instead."""
    try:
        yield
    except (ValueError, OSError) as exc:
        reason = None if isinstance(exc, ValidationError) else user_input(exc)
        if reason is None:
            raise
        raise ValidationError(argument, reason) from None
