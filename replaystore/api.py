"""The store users hold: the core `replaystore.store.Store` plus entry points to the memory kinds and SQL.

The core knows no memory kind and no query layer; this module sits above them (README.md,
"Layers") and is what `replaystore.open()` returns. Each entry point imports its kind when called,
so `import replaystore` stays light (the exemplar buffers bring torch, the query layer polars).
Inside the library, code that holds a core store calls the kinds' own constructors instead:
`ExemplarBuffer.open(store, ...)`, `ExperienceMemory(store, ...)`, `replaystore.query.sql(store, ...)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from replaystore import store as core
from replaystore.schemas import Kind
from replaystore.store import DEFAULT_URI, Version

if TYPE_CHECKING:
    import polars as pl

    from replaystore.exemplars import ExemplarBuffer
    from replaystore.experiences import ExperienceMemory

__all__ = ["Store", "open"]


class Store(core.Store):
    """A replaystore: validated, versioned Lance tables under one root URI, with its memory kinds and SQL."""

    def exemplars(self, name: str, **settings: Any) -> ExemplarBuffer:
        """Open or create a byte-budgeted exemplar buffer (see `replaystore.exemplars`)."""
        from replaystore.exemplars import ExemplarBuffer

        return ExemplarBuffer.open(self, name, **settings)

    def experiences(self, table: str = Kind.EXPERIENCES.value, **settings: Any) -> ExperienceMemory:
        """The ReMe procedural memory in `table` (see `replaystore.experiences`)."""
        from replaystore.experiences import ExperienceMemory

        return ExperienceMemory(self, table, **settings)

    def sql(self, query: str, versions: Mapping[str, Version] | None = None) -> pl.DataFrame:
        """Run a read-only SQL query over the store's tables; returns a polars DataFrame."""
        from replaystore.query import sql

        return sql(self, query, versions)

    def sql_arrow(self, query: str, versions: Mapping[str, Version] | None = None) -> pa.Table:
        """`sql`, returned as an Arrow table."""
        from replaystore.query import sql_arrow

        return sql_arrow(self, query, versions)

    def sql_batches(self, query: str, versions: Mapping[str, Version] | None = None, batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        """Stream a query's result as Arrow record batches (results larger than memory); `batch_rows`
        defaults to the query layer's `DEFAULT_BATCH_ROWS`."""
        from replaystore.query import sql_batches

        return sql_batches(self, query, versions) if batch_rows is None else sql_batches(self, query, versions, batch_rows)


def open(uri: str | None = None, storage_options: Mapping[str, str] | None = None) -> Store:  # noqa: A001
    """Open the store at `uri`, `$REPLAYSTORE_URI`, or `./replaystore-data`; its folder appears with the first write."""
    return Store(uri or os.environ.get("REPLAYSTORE_URI") or DEFAULT_URI, storage_options)
