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
import pyarrow as pa

from replaystore import schemas
from replaystore.checks import integer
from replaystore.errors import (
    NotFoundError,
    ReadOnlyError,
    StoreURIError,
    TableNameError,
    ValidationError,
)
from replaystore.lance_errors import (
    is_already_exists,
    is_denied,
    is_not_found,
    is_unknown_version,
    is_vanished_tag,
    is_version_gone,
)
from replaystore.retry import MAX_ATTEMPTS, with_retries
from replaystore.table import PAGE_BYTES as PAGE_BYTES
from replaystore.table import Edit as Edit
from replaystore.table import SchemaGap, Table, Version, schema_version
from replaystore.table import TableInfo as TableInfo
from replaystore.table import VersionMovedError as VersionMovedError

T = TypeVar("T")

_log = logging.getLogger("replaystore")

DEFAULT_URI = "./replaystore-data"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")
_SCHEMES = {"s3", "s3+ddb", "gs", "az", "abfs", "file", "memory"}
PIN_PREFIX = "pin-"
PIN_TIME = "%Y%m%dt%H%M%S"  # a pin's tag carries when it was taken: pin-<UTC time>-<random>
STALE_PINS = timedelta(days=2)  # a pin this old was left by a reader that died (an epoch takes minutes to hours)


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
class Migration:
    """What `Store.migrate` did to one table: its schema version before and after, the columns it
    added, and the table's (Lance) version after; before == after means nothing was written."""

    table: str
    schema_before: int
    schema_after: int
    added: tuple[str, ...]
    version: int


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

    def table(self, name: str, version: Version | None = None, *, create: str | None = None, params: Mapping[str, Any] | None = None) -> Table:
        """Table `name` for one operation, opened once: at `version` (number or tag; read-only) or the latest.

        `create`: the kind to create it as when it is missing (with `params`); an existing table
        must be of that kind. Creating is idempotent, so concurrent creators race safely.
        """
        if create is None:
            return Table(self, name, self._open(name, version), latest=version is None)
        if version is not None:
            raise ValidationError("version", "a table is created at its first version: open it without a version to create it")
        spec = schemas.load_spec(create)
        schema = spec.arrow_schema(params)
        try:
            ds = self._open(name)  # an existing table is only read: opening with read-only credentials works
        except NotFoundError:
            try:
                created = lance.write_dataset(
                    schema.empty_table(),
                    self.table_uri(name),
                    mode="create",
                    data_storage_version=cast(Any, spec.data_storage_version),  # from the contract; appends and compactions keep it
                    storage_options=self.storage_options or None,
                )
                return Table(self, name, created)
            except OSError as exc:
                if is_denied(exc):
                    raise self._denied(name) from None
                if not is_already_exists(exc):
                    raise
            ds = self._open(name)  # a concurrent creator won the race
        table = Table(self, name, ds)
        if table.kind != create:
            raise ValidationError("table name", f"table '{name}' already exists with kind '{table.kind}', not '{create}'")
        return table

    def find(self, name: str, version: Version | None = None) -> Table | None:
        """Table `name` for one operation (`table`), or None when there is no such table (a table
        without `version` is still an error)."""
        try:
            return self.table(name, version)
        except NotFoundError:
            if version is not None and self.exists(name):
                raise
            return None

    def create_table(self, name: str, kind: str | None = None, params: Mapping[str, Any] | None = None) -> int:
        """Create table `name` of `kind` (default: the kind named like the table); idempotent.

        Returns the table's latest version. Creating an existing table of the same kind is a no-op,
        so concurrent creators race safely; an existing table of another kind is an error.
        """
        return self.table(name, create=kind or name, params=params).version

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
        return Table(self, name, ds if ds is not None else self._open(name)).schema_gap()

    def require_columns(self, name: str, columns: Iterable[str], ds: lance.LanceDataset | None = None) -> None:
        """Refuse, in one line naming `replaystore migrate`, a read of the latest version that needs
        columns `name` lacks only because its stored schema is older than this code's (`Table.require_columns`)."""
        Table(self, name, ds if ds is not None else self._open(name)).require_columns(columns)

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
                stored = schema_version(ds.schema)
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
            table = self.table(name)
        except NotFoundError:
            table = self.table(name, create=kind or name, params=params)
        return table.append(data)

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
        """Upsert rows keyed by `on` in one commit (`Table.merge`)."""
        return self.table(name).merge(data, on, update=update, insert=insert, delete_unmatched=delete_unmatched)

    def update(self, name: str, values: Mapping[str, str], where: str | None = None) -> int:
        """Set columns to SQL expressions (`{"freq": "freq + 1"}`) for rows matching `where` (`Table.update`)."""
        return self.table(name).update(values, where)

    def delete(self, name: str, where: str) -> int:
        """Delete rows matching a SQL predicate as one new version (`Table.delete`)."""
        if not where or not where.strip():
            raise ValidationError("where", "a delete needs a predicate; use drop() to remove a whole table")
        return self.table(name).delete(where)

    def atomically(self, name: str, plan: Callable[[lance.LanceDataset], tuple[Edit | None, T]], attempts: int = MAX_ATTEMPTS) -> tuple[int, T]:
        """Read-plan-write that no concurrent writer can interleave, on any machine (`Table.atomically`)."""
        return self.table(name).atomically(plan, attempts)

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
        return self.table(name, version).read(columns, filter)

    def count(self, name: str, filter: str | None = None, version: Version | None = None) -> int:
        return self.table(name, version).count(filter)

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
        for attempt in range(MAX_ATTEMPTS):
            try:
                self._hold(name, ds, tag)
                break
            except NotFoundError:
                # "The latest" was superseded and cleaned up between resolving and tagging it (a
                # cleanup with a retention near zero): pin the version that is the latest now.
                if version is not None or attempt == MAX_ATTEMPTS - 1:
                    raise
                ds = self._open(name)
        try:
            yield ds.version
        finally:
            try:
                ds.tags.delete(tag)  # tags belong to the table, not to the version `ds` reads
            except (ValueError, OSError) as exc:  # e.g. cleanup dropped it as stale; the version is no longer held
                _log.warning("could not release pin %s of table %r: %s", tag, name, exc)

    def _hold(self, name: str, ds: lance.LanceDataset, tag: str) -> None:
        """Tag `ds`'s version, or raise `NotFoundError` when cleanup removed it first."""
        try:
            ds.tags.create(tag, ds.version)
        except (ValueError, OSError) as exc:
            if not is_denied(exc) and (is_not_found(exc) or is_version_gone(exc)):  # a refused write stays what it is: the stream reads unpinned then
                raise NotFoundError(f"table '{name}' has no version {ds.version} any more (cleaned up)") from None
            raise
        try:
            self._open(name, ds.version)  # still there once tagged: cleanup from now on skips it
        except NotFoundError:
            ds.tags.delete(tag)
            raise

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
        return self.table(name).info()

    def stats(self, name: str) -> dict[str, Any]:
        """Rows, bytes, fragments, versions, tags and per-column types of a table."""
        table = self.table(name)
        info = table.info()
        return {
            "name": name,
            "kind": info.kind,
            "schema_version": schema_version(table.schema),
            "rows": info.rows,
            "bytes": info.bytes,
            "version": info.version,
            "versions": len(table.dataset.versions()),
            "fragments": info.fragments,
            "tags": {tag: int(v["version"]) for tag, v in _tag_list(table.dataset).items()},
            "columns": {f.name: str(f.type) for f in table.schema},
        }


def _widens(stored: pa.DataType, target: pa.DataType) -> bool:
    """A float column the schema file now keeps wider (the one type change `migrate` makes)."""
    return pa.types.is_floating(stored) and pa.types.is_floating(target) and target.bit_width > stored.bit_width


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
