"""Run a checked statement with Polars SQL over lazy Lance scans of the store's tables.

Each table the statement reads is registered under its name as a lazy Lance scan
(`replaystore.query.scan`), so Polars pushes projections and filters into the Lance scanner. Each scan is fixed to the version
opened when the plan is built (an older one when `versions` asks for it: time travel), so a
statement reads one consistent snapshot even while writers commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from replaystore.checks import integer
from replaystore.errors import NotFoundError, ValidationError
from replaystore.lance_errors import missing_column
from replaystore.memory import keep_freed_memory
from replaystore.query.confine import Statement, inspect
from replaystore.query.scan import scan

if TYPE_CHECKING:
    from replaystore.store import Store, Version

DEFAULT_BATCH_ROWS = 65_536


def plan(store: Store, query: str, versions: Mapping[str, Version] | None = None) -> tuple[pl.LazyFrame, Statement]:
    """Check `query` and build its lazy Polars plan; nothing is read yet beyond table metadata."""
    keep_freed_memory()
    tables = store.table_names()
    statement = inspect(query, tables)
    pinned = _check_versions(store, tables, versions)
    frames = {name: _scan(store, name, pinned.get(name)) for name in statement.tables}
    try:
        frame = pl.SQLContext(frames).execute(query, eager=False)
        frame.collect_schema()  # resolves every column the statement names now, not at the first batch
        return frame, statement
    except pl.exceptions.PolarsError as exc:
        column = missing_column(str(exc))
        if column is not None:  # a column the latest version lacks because its schema is older: name the migrate command
            for name in statement.tables:
                if name not in pinned:
                    store.require_columns(name, [column])
        raise _query_error(exc) from None


def sql(store: Store, query: str, versions: Mapping[str, Version] | None = None) -> pl.DataFrame:
    """Run a read-only SQL query over the store's tables and return a Polars DataFrame."""
    frame, statement = plan(store, query, versions)
    return _collect(frame, statement)


def sql_arrow(store: Store, query: str, versions: Mapping[str, Version] | None = None) -> pa.Table:
    """`sql`, returned as an Arrow table (zero-copy from Polars)."""
    return sql(store, query, versions).to_arrow()


def sql_batches(
    store: Store,
    query: str,
    versions: Mapping[str, Version] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Stream a result as Arrow record batches of at most `batch_rows` rows (one empty batch if none).

    Statements without window functions or UNNEST run on Polars' streaming engine, so a
    result larger than memory never exists at once. Polars' streaming engine mis-plans row
    indexes over Lance scans (it panics), so those statements are collected in memory first
    and then cut into batches (see docs/sql.md, "Bounded memory").
    """
    integer("batch_rows", batch_rows, minimum=1)
    frame, statement = plan(store, query, versions)  # refusals and syntax errors raise here, not at the first batch
    return _stream(frame, statement, batch_rows)


def _stream(frame: pl.LazyFrame, statement: Statement, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the result's batches; an empty result still yields one empty batch, so readers get its schema."""
    if statement.streamable:
        chunks: Iterator[pl.DataFrame] = _guard(frame.collect_batches(chunk_size=batch_rows, engine="streaming"))
    else:
        chunks = iter([_collect(frame, statement)])
    empty = True
    for chunk in chunks:
        for batch in chunk.to_arrow().to_batches(max_chunksize=batch_rows):
            empty = False
            yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=pl.DataFrame(schema=frame.collect_schema()).to_arrow().schema)


def _guard(chunks: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    try:
        yield from chunks
    except pl.exceptions.PolarsError as exc:
        raise _query_error(exc) from None


def _collect(frame: pl.LazyFrame, statement: Statement) -> pl.DataFrame:
    try:
        return frame.collect(engine="streaming" if statement.streamable else "in-memory")
    except pl.exceptions.PolarsError as exc:
        raise _query_error(exc) from None


def _scan(store: Store, name: str, version: Version | None) -> pl.LazyFrame:
    """Scan the version opened now, so the statement reads it even if a writer commits meanwhile."""
    return scan(store.dataset(name, version))


def _check_versions(store: Store, tables: list[str], versions: Mapping[str, Version] | None) -> dict[str, Version]:
    """Every pinned table must exist and every version be a number or tag (checked when opened)."""
    if versions is None:
        return {}
    if not isinstance(versions, Mapping):
        raise ValidationError("versions", "must map table names to a version number or tag, e.g. {'exemplars': 12}")
    for name, version in versions.items():
        if name not in tables:
            raise NotFoundError(f"unknown table '{name}' in versions (tables in this store: {', '.join(tables) or 'none'})")
        if isinstance(version, bool) or not isinstance(version, (int, str)) or (isinstance(version, int) and version < 1):
            raise ValidationError(f"versions[{name!r}]", f"must be a version number ≥ 1 or a tag, got {version!r}")
        store.dataset(name, version)  # an unknown version raises NotFoundError, even for a table the query skips
    return dict(versions)


def _query_error(exc: pl.exceptions.PolarsError) -> ValidationError:
    """Polars' errors, cut to their first line: the line that names the problem."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ValidationError("query", f"{type(exc).__name__.removesuffix('Error')}: {text}")
