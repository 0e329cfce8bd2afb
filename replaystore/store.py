"""The store: one Lance dataset per table under a root URI, versioned, validated, race-safe.

The root is a LanceDB directory (`<root>/<name>.lance`), so LanceDB's vector and full-text search
open the same tables. Every write goes through `schemas.conform` (nothing invalid is written) and
`retry.with_retries` (commit conflicts with concurrent writers are retried, never lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import lance
import numpy as np
import pyarrow as pa
from lance.fragment import FragmentMetadata, write_fragments
from lance.schema import LanceSchema

from replaystore import schemas
from replaystore.checks import integer
from replaystore.errors import (
    CommitConflictError,
    NotFoundError,
    ReadOnlyError,
    SchemaOutdatedError,
    StoreURIError,
    TableNameError,
    ValidationError,
)
from replaystore.lance_errors import (
    is_already_exists,
    is_conflict,
    is_denied,
    is_not_found,
    is_unknown_version,
    is_vanished_tag,
    is_version_gone,
    missing_column,
    user_input,
)
from replaystore.retry import MAX_ATTEMPTS, backoff, with_retries

T = TypeVar("T")

_log = logging.getLogger("replaystore")

DEFAULT_URI = "./replaystore-data"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")
_SCHEMES = {"s3", "s3+ddb", "gs", "az", "abfs", "file", "memory"}
PIN_PREFIX = "pin-"
PIN_TIME = "%Y%m%dt%H%M%S"  # a pin's tag carries when it was taken: pin-<UTC time>-<random>
STALE_PINS = timedelta(days=2)  # a pin this old was left by a reader that died (an epoch takes minutes to hours)

Version = int | str


def validate_name(name: str, field: str = "table name") -> str:
    """Refuse names (of tables, or of what `field` says) that are empty, too long, or could leave the store directory."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TableNameError(
            field,
            f"{name!r} is not allowed: use 1-128 letters, digits, '_' or '-', starting with a letter or digit (no path separators, no '..')",
        )
    return name


def _check_uri(uri: str) -> str:
    if not isinstance(uri, str) or not uri.strip():
        raise StoreURIError("store URI must be a non-empty string")
    m = _SCHEME.match(uri)
    if m is None:
        if "://" in uri or uri.startswith(":") or re.match(r"^[a-z][a-z0-9+.-]+:", uri):  # e.g. 's3:bucket'
            raise StoreURIError(f"malformed store URI {uri!r}: expected a path or scheme://bucket/path")
        return str(Path(uri).expanduser().absolute())
    scheme, rest = m.groups()
    if scheme not in _SCHEMES:
        raise StoreURIError(f"unsupported store URI scheme {scheme!r} in {uri!r} (supported: {', '.join(sorted(_SCHEMES))})")
    if scheme in {"s3", "s3+ddb", "gs", "az", "abfs"} and (not rest or rest.startswith("/")):
        raise StoreURIError(f"malformed store URI {uri!r}: missing bucket name")
    if scheme == "file":
        return str(Path(rest).absolute())
    return uri.rstrip("/")


@dataclass(frozen=True)
class VersionInfo:
    """One committed version of a table."""

    version: int
    timestamp: datetime
    rows: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    """What `replaystore tables` prints for one table."""

    name: str
    kind: str | None
    rows: int
    bytes: int
    version: int
    fragments: int


@dataclass(frozen=True)
class Edit:
    """One change planned against the version a writer read: rows to delete (a SQL predicate), rows to
    insert, and schema metadata to set. `Store.atomically` commits it only onto that same version."""

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
class Migration:
    """What `Store.migrate` did to one table: its schema version before and after, the columns it
    added, and the table's (Lance) version after; before == after means nothing was written."""

    table: str
    schema_before: int
    schema_after: int
    added: tuple[str, ...]
    version: int


PAGE_BYTES = 4 * 1024 * 1024  # about what one page of a column holds in the data files writes leave


def _in_pages(table: pa.Table) -> pa.RecordBatchReader:
    """`table` as batches of about `PAGE_BYTES`. Lance (file format 2.1+) cuts pages at the batches it
    is handed: a 1M-row table written as one batch leaves one page per column, which a scan must read
    and decode whole before its first row (a stream of 1M 272-byte rows: ~2.8M rows/s from one page,
    ~6-7M from pages of a few MB, docs/streaming.md, "Table layout decides scan speed")."""
    rows = max(1, PAGE_BYTES * table.num_rows // max(1, table.nbytes))
    return table.to_reader(max_chunksize=rows)  # a reader in C++: Lance pulls batches without taking the GIL


class Store:
    """A replaystore: validated, versioned Lance tables under one root URI.

    The core: it knows no memory kind and no SQL. `replaystore.open()` returns its subclass
    `replaystore.api.Store`, which adds `exemplars()`, `experiences()` and `sql()`."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = _check_uri(uri)
        self.storage_options: dict[str, str] = dict(storage_options or {})
        self.is_local = _SCHEME.match(self.uri) is None  # the folder appears with the first table: opening writes nothing
        # One Lance session (metadata and index caches) for every dataset this store opens: an
        # operation opens its table afresh to see the latest version, and with the session that
        # open reads only what changed instead of parsing every manifest and file footer again.
        # What it caches is immutable per version, so another writer's commits are still seen at
        # the next open (tests/test_store.py).
        self._session: lance.Session | None = None

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __getstate__(self) -> dict[str, Any]:  # a Lance session stays in the process that made it
        return {**self.__dict__, "_session": None}

    @property
    def session(self) -> lance.Session:
        if self._session is None:
            self._session = lance.Session()
        return self._session

    # -- tables -------------------------------------------------------------------------------

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{validate_name(name)}.lance"

    def table_names(self) -> list[str]:
        """Names of the tables in the store, sorted."""
        if self.is_local:
            return sorted(p.name[: -len(".lance")] for p in Path(self.uri).glob("*.lance") if p.is_dir())
        import lancedb  # only needed to list object-store prefixes

        db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        return sorted(db.list_tables().tables)

    def exists(self, name: str) -> bool:
        try:
            self._open(name)
        except NotFoundError:
            return False
        return True

    def create_table(self, name: str, kind: str | None = None, params: Mapping[str, Any] | None = None) -> int:
        """Create table `name` of `kind` (default: the kind named like the table); idempotent.

        Returns the table's latest version. Creating an existing table of the same kind is a no-op,
        so concurrent creators race safely; an existing table of another kind is an error.
        """
        kind = kind or name
        spec = schemas.load_spec(kind)
        schema = spec.arrow_schema(params)
        try:
            ds = self._open(name)  # an existing table is only read: opening with read-only credentials works
        except NotFoundError:
            try:
                return lance.write_dataset(
                    schema.empty_table(),
                    self.table_uri(name),
                    mode="create",
                    data_storage_version=cast(Any, spec.data_storage_version),  # from the contract; appends and compactions keep it
                    storage_options=self.storage_options or None,
                ).version
            except OSError as exc:
                if is_denied(exc):
                    raise self._denied(name) from None
                if not is_already_exists(exc):
                    raise
            ds = self._open(name)  # a concurrent creator won the race
        existing = schemas.kind_of(ds.schema)
        if existing != kind:
            raise ValidationError("table name", f"table '{name}' already exists with kind '{existing}', not '{kind}'")
        return ds.version

    def drop(self, name: str) -> None:
        """Delete a table and all its versions."""
        import lancedb

        self._open(name)
        lancedb.connect(self.uri, storage_options=self.storage_options or None).drop_table(name)

    def kind(self, name: str) -> str | None:
        return schemas.kind_of(self._open(name).schema)

    def schema(self, name: str) -> pa.Schema:
        return self._open(name).schema

    def _open(self, name: str, version: Version | None = None) -> lance.LanceDataset:
        uri = self.table_uri(name)
        try:
            return lance.dataset(uri, version=version, storage_options=self.storage_options or None, session=self.session)
        except (ValueError, OSError) as exc:
            if version is not None and is_unknown_version(exc):
                raise NotFoundError(f"table '{name}' has no version or tag {version!r}") from None
            if is_not_found(exc):
                raise NotFoundError(f"unknown table '{name}' in store {self.uri}") from None
            raise

    def dataset(self, name: str, version: Version | None = None) -> lance.LanceDataset:
        """The Lance dataset of a table, at `version` (number or tag) or the latest.

        Never writes: a table whose stored schema is older than this code's opens as stored, so a
        reader with read-only credentials works; `migrate` brings it up to date.
        """
        return self._open(name, version)

    # -- schema versions ----------------------------------------------------------------------

    def schema_gap(self, name: str, ds: lance.LanceDataset | None = None) -> SchemaGap | None:
        """How the latest stored schema of `name` (or `ds`'s) falls behind its kind's schema file;
        None when it is current (or the table has no kind)."""
        return _gap(name, (ds if ds is not None else self._open(name)).schema)

    def require_columns(self, name: str, columns: Iterable[str], ds: lance.LanceDataset | None = None) -> None:
        """Refuse, in one line naming `replaystore migrate`, a read of the latest version that needs
        columns `name` lacks only because its stored schema is older than this code's. Other absent
        columns are left to the caller's own error (an unknown column is not a migration's business)."""
        ds = ds if ds is not None else self._open(name)
        absent = {c for c in columns if ds.schema.get_field_index(c) < 0}
        if not absent:
            return
        gap = self.schema_gap(name, ds)
        if gap is not None and absent & set(gap.missing):
            raise gap.error()

    @contextlib.contextmanager
    def _reading(self, name: str, ds: lance.LanceDataset, latest: bool) -> Iterator[None]:
        """A read of the latest version that failed on a column the table lacks because its schema
        is older says so and names the migrate command; checked only when a read fails."""
        try:
            yield
        except (ValueError, OSError) as exc:
            column = missing_column(str(exc))
            if latest and column is not None:
                self.require_columns(name, [column], ds)
            raise

    def _check_writable(self, name: str, ds: lance.LanceDataset) -> pa.Schema:
        """Writes wait for an explicit `migrate` when the table lacks columns of this code's schema:
        migrating implicitly would make every writer a schema changer (and rows would lack them).
        Returns the schema checked, for the write to validate against: each `ds.schema` converts
        Lance's schema anew, which a 10,000-row append would otherwise pay twice."""
        schema = ds.schema
        gap = _gap(name, schema)
        if gap is not None and gap.missing:
            raise gap.error()
        return schema

    def migrate(self, name: str | None = None) -> dict[str, Migration]:
        """Bring one table (all when `name` is None) up to this code's schema files: add the columns
        its kind gained since it was written (nullable or defaulted ones; defaults filled), widen
        float columns the file now keeps wider, and record the new schema version. The only place a table's schema changes: reads never migrate.
        Current tables get no new version; a missing required column is refused (migrate it by hand)."""
        out: dict[str, Migration] = {}
        for table in [name] if name else self.table_names():
            ds = self._open(table)
            gap = self.schema_gap(table, ds)
            if gap is None:
                stored = _schema_version(ds.schema)
                out[table] = Migration(table, stored, stored, (), ds.version)
                continue
            out[table] = Migration(table, gap.stored, gap.current, gap.missing, self._migrate(table, ds).version)
        return out

    def _migrate(self, name: str, ds: lance.LanceDataset) -> lance.LanceDataset:
        kind = schemas.kind_of(ds.schema)
        assert kind is not None  # only tables with a schema gap come here, and those have a kind
        spec = schemas.load_spec(kind)
        target = spec.arrow_schema(schemas.params_of(ds.schema))
        missing = [f for f in target if ds.schema.get_field_index(f.name) < 0]
        for f in missing:
            fspec = spec.field(f.name)
            if not (f.nullable or fspec.default is not None):
                raise ValidationError(f.name, f"schema v{spec.schema_version} adds a required column; migrate '{name}' by hand")
        widened = [f for f in target if f.name not in {m.name for m in missing} and _widens(ds.schema.field(f.name).type, f.type)]

        def apply() -> lance.LanceDataset:
            current = self._open(name)
            todo = [f for f in missing if current.schema.get_field_index(f.name) < 0]
            if todo:
                current.add_columns([pa.field(f.name, f.type, nullable=True, metadata=f.metadata) for f in todo])
                current = self._open(name)
            wider = [f for f in widened if _widens(current.schema.field(f.name).type, f.type)]
            if wider:  # float32 → float64 (experiences v3): values keep the float32 value they hold
                current.alter_columns(*[cast(Any, {"path": f.name, "data_type": f.type}) for f in wider])  # lance types each as an iterable
                current = self._open(name)
            for f in missing:  # all of them: a writer killed after add_columns left its defaults unfilled
                default = spec.field(f.name).default
                if default is not None:
                    literal = "now()" if default == "now" else json.dumps(default) if not isinstance(default, str) else f"'{default}'"
                    current.update({f.name: literal}, where=f"{f.name} IS NULL")
            meta = dict(current.schema.metadata or {})
            meta[schemas.VERSION_KEY] = str(spec.schema_version).encode()
            current.update_schema_metadata({k.decode(): v.decode() for k, v in meta.items()})
            return self._open(name)

        return self._commit(name, apply)

    def _commit(self, name: str, write: Callable[[], T]) -> T:
        """`with_retries`, with a refusal by the storage (read-only credentials) said in one line."""
        try:
            return with_retries(write)
        except (OSError, ValueError) as exc:
            if not is_denied(exc):
                raise
            raise self._denied(name) from None

    def _denied(self, name: str) -> ReadOnlyError:
        return ReadOnlyError(f"cannot write table '{name}' in {self.uri}: the storage denied it (read-only credentials?); nothing was committed")

    # -- writes -------------------------------------------------------------------------------

    def append(self, name: str, data: Any, kind: str | None = None, params: Mapping[str, Any] | None = None) -> int:
        """Validate `data` against the table's schema and append it as one new version.

        Creates the table (of `kind`, default the kind named like the table) if it is missing.
        Returns the new version. Invalid data raises `ValidationError` and writes nothing.
        """
        try:
            ds = self._open(name)
        except NotFoundError:
            self.create_table(name, kind, params)
            ds = self._open(name)
        table = schemas.conform(data, self._check_writable(name, ds))
        if table.num_rows == 0:
            return ds.version
        opened = [ds]

        def write() -> int:
            # The first try writes through the dataset already open (Lance reuses its session and
            # manifest instead of opening the table again: one open per append); a retry after a
            # conflict opens the latest version.
            target = opened.pop() if opened else self.table_uri(name)
            return lance.write_dataset(_in_pages(table), target, mode="append", storage_options=self.storage_options or None).version

        return self._commit(name, write)

    def merge(
        self,
        name: str,
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
        ds = self.dataset(name)
        table = schemas.conform(data, self._check_writable(name, ds))
        if table.num_rows == 0:
            return ds.version

        def write() -> int:
            builder = self.dataset(name).merge_insert(on)
            if update:
                builder = builder.when_matched_update_all()
            if insert:
                builder = builder.when_not_matched_insert_all()
            if delete_unmatched:
                builder = builder.when_not_matched_by_source_delete(delete_unmatched)
            builder.execute(table)
            return self._open(name).version

        return self._commit(name, write)

    def update(self, name: str, values: Mapping[str, str], where: str | None = None) -> int:
        """Set columns to SQL expressions (`{"freq": "freq + 1"}`) for rows matching `where`."""
        ds = self.dataset(name)
        schema = self._check_writable(name, ds)
        for column in values:
            if schema.get_field_index(column) < 0:
                raise ValidationError(column, f"unknown column of table '{name}'")
        if where is not None:
            with _named("where"):
                ds.scanner(filter=where).explain_plan()  # planned, not run: names a bad predicate before the values
        # Expressions bypass `conform`, so preview their results and check them before committing.
        with _named("values"):
            preview = ds.to_table(columns=dict(values), filter=where, with_row_id=True).drop_columns(["_rowid"])
        schemas.check_computed(preview, schema)

        def write() -> int:
            ds = self._open(name)
            ds.update(dict(values), where=where)
            return self._open(name).version

        return self._commit(name, write)

    def delete(self, name: str, where: str) -> int:
        """Delete rows matching a SQL predicate as one new version."""
        if not where or not where.strip():
            raise ValidationError("where", "a delete needs a predicate; use drop() to remove a whole table")
        self._check_writable(name, self._open(name))

        def write() -> int:
            ds = self._open(name)
            ds.delete(where)
            return self._open(name).version

        with _named("where"):
            return self._commit(name, write)

    def atomically(self, name: str, plan: Callable[[lance.LanceDataset], tuple[Edit | None, T]], attempts: int = MAX_ATTEMPTS) -> tuple[int, T]:
        """Read-plan-write that no concurrent writer can interleave, on any machine.

        `plan` gets the table's latest version and returns the `Edit` to make (None: nothing) and a
        result for the caller. The edit commits as the very next version or not at all: if any
        other change landed since `plan` read (another process, another machine), the commit is
        refused by Lance's own conflict detection and `plan` runs again on the new version. Errors
        raised by `plan` (a refused budget, bad input) propagate and nothing is written.
        Returns the committed (or, for no edit, the read) version and `plan`'s result.
        """
        for attempt in range(attempts):
            ds = self._open(name)
            self._check_writable(name, ds)
            edit, result = plan(ds)
            if edit is None or edit.empty:
                return ds.version, result
            try:
                return self._commit_onto(ds, edit), result
            except VersionMovedError:
                if attempt == attempts - 1:
                    raise
                backoff(attempt)
            except (OSError, ValueError) as exc:
                if not is_denied(exc):
                    raise
                raise self._denied(name) from None
        raise AssertionError("unreachable")

    def _commit_onto(self, ds: lance.LanceDataset, edit: Edit) -> int:
        """Commit `edit` as version `ds.version + 1` exactly, or raise `VersionMovedError`.

        Lance gives this two ways, and both keep the data files of untouched fragments:
        - a `Merge` commit (the full fragment list, with deletion files for cut rows and new
          fragments for inserts): Lance refuses it when any append, update, delete, compaction or
          merge landed after `ds.version`, and it keeps the table's indexes;
        - when a cut empties a whole fragment (which `Merge` may not drop), a strict `Overwrite`
          (`max_retries=0`: committed as `ds.version + 1` or refused), which rewrites the
          fragments it cuts from and drops the table's indexes (the index flow rebuilds them).
        """
        insert = None if edit.insert is None or edit.insert.num_rows == 0 else schemas.conform(edit.insert, ds.schema)
        schema = ds.schema
        if edit.metadata:
            schema = schema.with_metadata({**{k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}, **edit.metadata})
        lance_schema = LanceSchema.from_pyarrow(schema)
        fragments = ds.get_fragments()
        hits: dict[int, int] = {}
        if edit.delete is not None:
            with _named("delete"):  # row addresses from a dataset scan: fragment id in the high 32 bits
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
            operation = lance.LanceOperation.Merge([*kept, *self._fragments(ds, insert, next_id)], lance_schema)
        else:
            clean = [f for f in fragments if f.fragment_id not in hits and f.metadata.deletion_file is None]
            rewrite = [f for f in fragments if f not in clean]
            survivors = ds.scanner(filter=f"({edit.delete}) IS NOT TRUE", fragments=rewrite).to_table().cast(ds.schema)
            rows = pa.concat_tables([survivors, *([insert.cast(ds.schema)] if insert is not None else [])])
            operation = lance.LanceOperation.Overwrite(schema, [f.metadata for f in clean] + self._fragments(ds, rows, next_id))
        try:
            return lance.LanceDataset.commit(ds.uri, operation, read_version=ds.version, max_retries=0, storage_options=self.storage_options or None).version
        except (OSError, ValueError, RuntimeError) as exc:
            if is_conflict(exc) or is_version_gone(exc):  # another commit landed, or cleanup removed the version planned on
                raise VersionMovedError(f"table changed after version {ds.version}: {str(exc).splitlines()[0][:200]}") from None
            raise

    def _fragments(self, ds: lance.LanceDataset, rows: pa.Table | None, first_id: int) -> list[FragmentMetadata]:
        """Write `rows` as new data files of `ds` (pages of about `PAGE_BYTES`), numbered from `first_id`."""
        if rows is None or rows.num_rows == 0:
            return []
        written = write_fragments(
            _in_pages(rows), ds.uri, schema=ds.schema, data_storage_version=ds.data_storage_version, storage_options=self.storage_options or None
        )
        for offset, meta in enumerate(written):
            meta.id = first_id + offset
        return written

    # -- reads --------------------------------------------------------------------------------

    def read(
        self,
        name: str,
        version: Version | None = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
    ) -> pa.Table:
        """Read a table (or a projection / filtered part of it) as of a version; never writes.

        A table whose schema is older than this code's reads the columns it stores; naming one it
        lacks (in `columns` or `filter`) raises `SchemaOutdatedError` naming `replaystore migrate`.
        """
        ds = self.dataset(name, version)
        with self._reading(name, ds, version is None), _named("filter"):
            return ds.to_table(columns=list(columns) if columns else None, filter=filter)

    def count(self, name: str, filter: str | None = None, version: Version | None = None) -> int:
        ds = self.dataset(name, version)
        with self._reading(name, ds, version is None), _named("filter"):
            return ds.count_rows(filter=filter)

    # -- versions -----------------------------------------------------------------------------

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version still on storage, oldest first, with its row count and tags."""
        ds = self._open(name)
        by_version: dict[int, list[str]] = {}
        for tag, info in _tag_list(ds).items():
            by_version.setdefault(int(info["version"]), []).append(tag)
        out = []
        for v in ds.versions():
            ts = cast(datetime, v["timestamp"])  # lance's versions() gives naive UTC datetimes
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
            rows = int(v.get("metadata", {}).get("total_rows", -1))
            out.append(VersionInfo(int(v["version"]), ts, rows, tuple(sorted(by_version.get(int(v["version"]), [])))))
        return out

    def tags(self, name: str) -> dict[str, int]:
        return {tag: int(info["version"]) for tag, info in _tag_list(self._open(name)).items()}

    def tag(self, name: str, version: int, tag: str) -> None:
        """Name a version; tagged versions survive `cleanup`."""
        validate_name(tag, "tag")
        integer("version", version, minimum=0)
        if tag.startswith(PIN_PREFIX):
            raise ValidationError("tag", f"names starting with '{PIN_PREFIX}' are reserved for the pins streams take, got '{tag}'")
        ds = self._open(name)
        self._open(name, version)  # unknown versions raise NotFoundError
        if tag in _tag_list(ds):
            raise ValidationError("tag", f"tag '{tag}' already exists on table '{name}'")
        ds.tags.create(tag, version)

    def untag(self, name: str, tag: str) -> None:
        ds = self._open(name)
        if tag not in _tag_list(ds):
            raise NotFoundError(f"table '{name}' has no tag '{tag}'")
        ds.tags.delete(tag)

    def restore(self, name: str, version: Version) -> int:
        """Make `version` (number or tag) the latest again, as a new version that can be undone."""
        self._open(name)  # an unknown table is reported as such, not as a missing version
        old = self._open(name, version)

        def write() -> int:
            self._open(name, old.version).restore()
            return self._open(name).version

        return self._commit(name, write)

    @contextlib.contextmanager
    def pin(self, name: str, version: int | None = None, opened: lance.LanceDataset | None = None) -> Iterator[int]:
        """Hold a version against cleanup while a reader uses it (a tag named `pin-…`).

        The tag lives in the store, so it holds against `cleanup` run on any machine: Lance's
        cleanup skips tagged versions. A version that cleanup removed before the tag landed is
        reported (`NotFoundError`), never read half-deleted. `opened`: the table already open at
        that version (a stream's epoch has just resolved it), which saves an open.
        """
        tag = f"{PIN_PREFIX}{datetime.now(UTC):{PIN_TIME}}-{uuid.uuid4().hex[:8]}"
        ds = opened if opened is not None and (version is None or opened.version == version) else self._open(name, version)
        ds.tags.create(tag, ds.version)
        try:
            self._open(name, ds.version)  # still there once tagged: cleanup from now on skips it
        except NotFoundError:
            ds.tags.delete(tag)
            raise
        try:
            yield ds.version
        finally:
            try:
                ds.tags.delete(tag)  # tags belong to the table, not to the version `ds` reads
            except (ValueError, OSError) as exc:  # e.g. cleanup dropped it as stale; the version is no longer held
                _log.warning("could not release pin %s of table %r: %s", tag, name, exc)

    # -- maintenance --------------------------------------------------------------------------

    def compact(self, name: str | None = None, target_rows_per_fragment: int = 1024 * 1024) -> dict[str, dict[str, int]]:
        """Merge small fragments (each append adds one); returns per-table fragment counts."""
        out: dict[str, dict[str, int]] = {}
        for table in [name] if name else self.table_names():
            before = len(self._open(table).get_fragments())

            def write(table: str = table) -> None:
                self._open(table).optimize.compact_files(target_rows_per_fragment=target_rows_per_fragment)

            with_retries(write)
            after = len(self._open(table).get_fragments())
            out[table] = {"fragments_before": before, "fragments_after": after}
        return out

    def cleanup(
        self, name: str | None = None, older_than: timedelta = timedelta(days=7), stale_pins: timedelta | None = STALE_PINS
    ) -> dict[str, dict[str, int]]:
        """Delete versions superseded more than `older_than` ago, never a tagged (or pinned) one.

        Age counts from when a version stopped being the latest (its successor's commit), not from
        its own commit: a reader that just resolved "the latest" has `older_than` to pin it.
        Pins taken more than `stale_pins` ago are removed first: a reader that was killed mid-epoch
        (a preempted job) never releases its pin, which would keep that version forever. None keeps them.
        """
        cutoff = datetime.now(UTC) - older_than
        out: dict[str, dict[str, int]] = {}
        for table in [name] if name else self.table_names():
            pins = self._drop_stale_pins(validate_name(table), stale_pins) if stale_pins is not None else 0
            history = self.versions(table)
            stale = [old.version for old, new in zip(history, history[1:]) if new.timestamp < cutoff and not old.tags]
            # Lance reads the tags again when it deletes: a pin taken since `history` was listed holds.
            stats = _tag_retried(lambda: self._open(table).cleanup_old_versions(versions=stale, error_if_tagged_old_versions=False)) if stale else None  # noqa: B023 - called here
            out[table] = {
                "bytes_removed": int(stats.bytes_removed) if stats else 0,
                "versions_removed": int(stats.old_versions) if stats else 0,
                "stale_pins_removed": pins,
            }
        return out

    def _drop_stale_pins(self, table: str, age: timedelta) -> int:
        """Delete pin tags taken more than `age` ago (pins without a time, from before pins carried
        one, are kept)."""
        ds = self._open(table)
        cutoff = datetime.now(UTC) - age
        dropped = 0
        for tag in _tag_list(ds):
            taken = _pin_time(tag)
            if taken is not None and taken < cutoff:
                ds.tags.delete(tag)
                dropped += 1
        return dropped

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between the processes of ONE machine (a file lock).

        Local stores lock a file beside the tables; object stores lock a file in the user's cache
        directory. It does not hold across machines: read-check-write sequences that must (budgets,
        dedup) use `atomically`. GeRe distillation still takes it (see docs/guarantees.md).
        """
        with self._file_lock(f"{validate_name(name)}.lock"):
            yield

    @contextlib.contextmanager
    def _file_lock(self, filename: str) -> Iterator[None]:
        if self.is_local:
            lock_dir = Path(self.uri) / "_locks"
        else:
            digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
            lock_dir = Path.home() / ".cache" / "replaystore" / "locks" / digest
        lock_dir.mkdir(parents=True, exist_ok=True)
        with (lock_dir / filename).open("w") as handle:  # the builtin: this module defines open()
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reports ------------------------------------------------------------------------------

    def info(self, name: str) -> TableInfo:
        ds = self._open(name)
        meta = ds.versions()[-1].get("metadata", {}) if ds.versions() else {}
        return TableInfo(
            name=name,
            kind=schemas.kind_of(ds.schema),
            rows=ds.count_rows(),
            bytes=int(meta.get("total_files_size", 0)),
            version=ds.version,
            fragments=len(ds.get_fragments()),
        )

    def stats(self, name: str) -> dict[str, Any]:
        """Rows, bytes, fragments, versions, tags and per-column types of a table."""
        ds = self.dataset(name)
        info = self.info(name)
        return {
            "name": name,
            "kind": info.kind,
            "schema_version": _schema_version(ds.schema),
            "rows": info.rows,
            "bytes": info.bytes,
            "version": info.version,
            "versions": len(ds.versions()),
            "fragments": info.fragments,
            "tags": self.tags(name),
            "columns": {f.name: str(f.type) for f in ds.schema},
        }


@contextlib.contextmanager
def _named(argument: str) -> Iterator[None]:
    """Lance reports a bad SQL predicate or expression as a generic error; name the argument instead."""
    try:
        yield
    except (ValueError, OSError) as exc:
        reason = None if isinstance(exc, ValidationError) else user_input(exc)
        if reason is None:
            raise
        raise ValidationError(argument, reason) from None


def _widens(stored: pa.DataType, target: pa.DataType) -> bool:
    """A float column the schema file now keeps wider (the one type change `migrate` makes)."""
    return pa.types.is_floating(stored) and pa.types.is_floating(target) and target.bit_width > stored.bit_width


def _gap(name: str, schema: pa.Schema) -> SchemaGap | None:
    """How `schema` (table `name`'s) falls behind its kind's schema file; None when current or kindless."""
    kind = schemas.kind_of(schema)
    if kind is None:
        return None
    spec = schemas.load_spec(kind)
    stored = _schema_version(schema)
    if stored >= spec.schema_version:
        return None
    target = spec.arrow_schema(schemas.params_of(schema))
    return SchemaGap(name, stored, spec.schema_version, tuple(f.name for f in target if schema.get_field_index(f.name) < 0))


def _schema_version(schema: pa.Schema) -> int:
    """The schema version a table was written (or last migrated) with; 0 before versions were recorded."""
    return int((schema.metadata or {}).get(schemas.VERSION_KEY, b"0"))


def _pin_time(tag: str) -> datetime | None:
    """When the pin `tag` was taken, or None for a tag that is not a timed pin."""
    if not tag.startswith(PIN_PREFIX):
        return None
    try:
        return datetime.strptime(tag[len(PIN_PREFIX) :].split("-")[0], PIN_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _tag_list(ds: lance.LanceDataset) -> dict[str, Any]:
    return _tag_retried(ds.tags.list)


def _tag_retried(read: Callable[[], T], attempts: int = 10) -> T:
    """Lance reads tags file by file (listing them, and again in cleanup): a pin released meanwhile
    by another process vanishes mid-read, so read again."""
    for attempt in range(attempts):
        try:
            return read()
        except (ValueError, OSError) as exc:
            if not is_vanished_tag(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
