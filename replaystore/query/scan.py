"""A Lance table version as a lazy Polars frame, read the way SQL over a buffer reads it.

Polars' own `pl.scan_lance` hands its engine Lance's batches of 8,192 rows and converts each
batch's strings to Polars' string views in Python threads. Profiling the SQL join of
docs/benchmarks.md ("Where the time goes (SQL)") found that conversion and the per-batch overhead
at about a third of a 1M-row join. This scan asks Lance for batches of about `BATCH_BYTES`,
casts strings and binaries to Arrow's view types in Arrow's C++ (which Polars then takes without a
copy) a few batches ahead on a small pool, and otherwise behaves as `pl.scan_lance`: Polars pushes the statement's projection and the
filters Lance can evaluate into the Lance scanner, and applies the rest itself.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import reduce
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source
from polars.lazyframe.resolver import LazyFrameResolver, ResolvedLazyFrameProps

if TYPE_CHECKING:
    import lance
    import pyarrow.compute as pc
    from polars.lazyframe.resolver import FilterExpr

BATCH_BYTES = 16 * 2**20  # what one scan batch should hold, about: big enough that per-batch costs vanish
BATCH_ROWS = (8_192, 131_072)  # the fewest (Lance's default) and most rows per scan batch
VARIABLE_VALUE_BYTES = 32  # a guess at one string, binary or list value, for sizing batches
CONVERT_AHEAD = 2  # batches converted while Polars works on the previous one (threads per scan)


def scan(dataset: lance.LanceDataset) -> pl.LazyFrame:
    """A lazy frame over `dataset`, at the version it was opened at."""
    return LanceScan(dataset).lazy()


class LanceScan(LazyFrameResolver):
    """Resolved by Polars when a plan is collected, with the plan's projection, filters and limit."""

    def __init__(self, dataset: lance.LanceDataset) -> None:
        self.dataset = dataset
        self.arrow_schema = dataset.schema  # Lance converts its schema anew on each `.schema`
        self.polars_schema = pl.Schema(self.arrow_schema)
        self.late = [f.name for f in self.arrow_schema if _is_wide(f.type)]

    def schema(self) -> pl.Schema:
        return self.polars_schema

    def resolve_lazyframe(
        self,
        *,
        projection: list[str] | None,
        limit: int | None,
        filters: list[FilterExpr],
        filter_columns: list[str],  # projection holds them already
        filter_drop_columns_idx: int | None,  # Polars narrows the source's columns itself
        existing_resolved_version_key: str | None,  # one version is opened per statement
    ) -> tuple[pl.LazyFrame, ResolvedLazyFrameProps]:
        """The limit applies before the filters (Polars' contract), so filters go to Lance only without one."""
        pushed: list[pc.Expression] = []
        kept: list[pl.Expr] = []
        for f in filters:
            expression = _arrow_expression(f)
            if limit is None and expression is not None and self._evaluates(expression):
                pushed.append(expression)
            else:
                kept.append(f.expr)
        columns = list(projection) if projection is not None else list(self.polars_schema)
        where = reduce(operator.and_, pushed) if pushed else None
        frame = register_io_source(
            lambda with_columns, predicate, n_rows, _hint: self._batches(with_columns or columns, where, limit, predicate, n_rows),
            schema={c: self.polars_schema[c] for c in columns},
            explain_name="Lance",
            explain_detail=f"{self.dataset.uri} version {self.dataset.version}; columns: {', '.join(columns)}; filter: {where}",
        )
        if kept:
            frame = frame.filter(reduce(operator.and_, kept))
        return frame, ResolvedLazyFrameProps(applied_filters=range(len(filters)))

    def _batches(
        self, columns: Sequence[str], where: pc.Expression | None, limit: int | None, predicate: pl.Expr | None, n_rows: int | None
    ) -> Iterator[pl.DataFrame]:
        """Lance's batches as Polars frames; a predicate Polars pushes here later is applied in Polars."""
        if limit is not None:
            n_rows = limit if n_rows is None else min(limit, n_rows)
        scanner = self.dataset.scanner(
            columns=list(columns),
            filter=where,
            limit=n_rows if predicate is None else limit,
            batch_size=_batch_rows(self.arrow_schema, columns),
            late_materialization=self.late or False,
        )
        reader = scanner.to_reader()
        for frame in _converted(reader, pa.schema([f.with_type(_view(f.type)) for f in reader.schema])):
            if predicate is not None:
                frame = frame.filter(predicate)
            if n_rows is not None:
                frame = frame.head(n_rows)
                n_rows -= frame.height
            yield frame
            if n_rows == 0:
                return

    def _evaluates(self, expression: pc.Expression) -> bool:
        """Whether Lance can plan the filter (some Arrow functions have no Lance form)."""
        try:
            self.dataset.scanner(filter=expression).explain_plan()
        except Exception:  # any planning failure means: let Polars filter
            return False
        return True


def _converted(reader: pa.RecordBatchReader, views: pa.Schema) -> Iterator[pl.DataFrame]:
    """Lance's batches as Polars frames, each converted up to `CONVERT_AHEAD` batches ahead of the
    one Polars takes (Arrow's cast releases the GIL): reading, converting and Polars' work on the
    previous frame overlap, as in Polars' own Lance reader, instead of taking turns on one thread."""
    with ThreadPoolExecutor(CONVERT_AHEAD) as pool:
        pending: deque[Future[pl.DataFrame]] = deque()
        for batch in reader:
            pending.append(pool.submit(_frame, batch, views))
            if len(pending) > CONVERT_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _frame(batch: pa.RecordBatch, views: pa.Schema) -> pl.DataFrame:
    return pl.DataFrame(batch.cast(views))  # strings as views, which Polars takes without a copy


def _arrow_expression(f: FilterExpr) -> pc.Expression | None:
    try:
        return f.pyarrow_expr
    except Exception:  # Polars re-raises its conversion's error: keep the filter in Polars
        return None


def _is_wide(dtype: pa.DataType) -> bool:
    """Columns whose values run to many bytes each: worth fetching only for rows a filter keeps.

    Everything else is decoded together with the columns a pushed filter reads (early
    materialization). Lance's own default assumes a filter keeps ~0.1% of the rows and takes every
    column wider than 10 bytes (strings included) row by row afterwards: for the broad filters of
    SQL over a buffer (`task_id < 8` keeps 80%) that doubled the scan (docs/benchmarks.md, "SQL")."""
    return (
        pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    )


def _view(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return pa.string_view()
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return pa.binary_view()
    return dtype


def _batch_rows(schema: pa.Schema, columns: Sequence[str]) -> int:
    """Rows per scan batch for about `BATCH_BYTES` of the scanned columns, within `BATCH_ROWS`."""
    width = sum(_value_bytes(schema.field(c).type) for c in columns)
    low, high = BATCH_ROWS
    return max(low, min(high, BATCH_BYTES // max(1, width)))


def _value_bytes(dtype: pa.DataType) -> int:
    if pa.types.is_fixed_size_list(dtype):
        return dtype.list_size * _value_bytes(dtype.value_type)
    try:
        return max(1, dtype.bit_width // 8)
    except ValueError:  # strings, binary and variable lists have no fixed width
        return VARIABLE_VALUE_BYTES
