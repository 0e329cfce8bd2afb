"""`replaystore sql`: run a read-only query and print or write the result.

Tables go through the usual `output.emit` (so `--json` works as for every command); csv and
parquet written to `--output` are streamed batch by batch, so results larger than memory fit.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from replaystore.cli.arguments import output_file
from replaystore.cli.output import Done, render_table
from replaystore.cli.stores import open_store
from replaystore.errors import ValidationError
from replaystore.query import sql_batches

FORMATS = ("table", "csv", "json", "parquet")


def parse_version(text: str) -> tuple[str, int | str]:
    """`TABLE=N` (a version number) or `TABLE=TAG`."""
    table, sep, version = text.partition("=")
    if not sep or not table or not version:
        raise ValidationError("--version", f"expected TABLE=N or TABLE=TAG, got {text!r}")
    return table, int(version) if version.isdigit() else version


def textual(frame: pl.DataFrame, nested: bool) -> pl.DataFrame:
    """Binary as base64 and, for csv, lists and structs as JSON text: forms text formats can hold."""
    exprs = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if dtype == pl.Binary:
            exprs.append(column.bin.encode("base64"))
        elif nested and dtype.is_nested():
            as_json = pl.struct(column.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
            exprs.append(pl.when(column.is_not_null()).then(as_json).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def run(args: argparse.Namespace) -> Any:
    store = open_store(args)
    versions = dict(parse_version(v) for v in args.version) or None
    if args.format == "parquet" and not args.output:
        raise ValidationError("--output", "parquet is binary: give --output FILE")
    batches = sql_batches(store, args.query, versions)
    if args.output and args.format in ("csv", "parquet"):
        rows = _write_stream(batches, Path(args.output), args.format)
        return _wrote(args, rows)
    frame = pl.from_arrow(pa.Table.from_batches(list(batches)))
    assert isinstance(frame, pl.DataFrame)
    if args.format == "table":
        if not args.output:
            return frame.to_dicts()
        text = render_table(frame.to_dicts())
    elif args.format == "csv":
        text = textual(frame, nested=True).write_csv()
    else:
        text = textual(frame, nested=False).write_json()
    if not args.output:
        return text.rstrip("\n")
    Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
    return _wrote(args, frame.height)


def _wrote(args: argparse.Namespace, rows: int) -> Done:
    return Done(f"wrote {rows} rows to {args.output}", {"file": args.output, "format": args.format, "rows": rows})


def _write_stream(batches: Iterator[pa.RecordBatch], path: Path, fmt: str) -> int:
    """Write batches as they come; the first (never missing) batch fixes the header or schema."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    with path.open("wb") as handle:
        for batch in batches:
            if fmt == "parquet":
                writer = writer or pq.ParquetWriter(handle, batch.schema)
                writer.write_batch(batch)
            else:
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                textual(frame, nested=True).write_csv(handle, include_header=rows == 0)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run a read-only SQL query over the store's tables (Polars SQL)")
    p.add_argument("query", help='one SELECT / WITH / VALUES statement, e.g. "SELECT class_id, COUNT(*) FROM exemplars GROUP BY 1"')
    p.add_argument("--version", action="append", default=[], metavar="TABLE=N", help="read TABLE as of version N or a tag (repeatable)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--output", metavar="FILE", type=output_file, help="write to FILE instead of standard output (its folder must exist)")
    p.set_defaults(func=run)
