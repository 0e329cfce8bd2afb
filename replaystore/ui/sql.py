"""The SQL page: one statement through the confined read-only query layer, with time travel.

The query layer refuses writes, catalog changes and file readers before execution
(`replaystore.query.confine`); this page only shows the first `RESULT_ROWS` rows of the stream.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from replaystore.errors import ReplayStoreError, ValidationError
from replaystore.query import sql_batches
from replaystore.store import Store, Version
from replaystore.ui import cells

RESULT_ROWS = 500


def parse_versions(text: str) -> dict[str, Version]:
    """`table=N` or `table=tag`, comma-separated, into the query layer's versions mapping."""
    versions: dict[str, Version] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        table, sep, version = part.partition("=")
        if not sep or not table.strip() or not version.strip():
            raise ValidationError("versions", f"expected TABLE=N or TABLE=TAG, got {part!r}")
        version = version.strip()
        versions[table.strip()] = int(version) if version.isdigit() else version
    return versions


def run(store: Store, query: str, versions_text: str = "") -> dict[str, Any]:
    """The result's first rows, or the one-line error the query layer gave."""
    if not query.strip():
        return {"columns": [], "rows": [], "error": None, "shown": 0, "more": False}
    try:
        batches = sql_batches(store, query, parse_versions(versions_text) or None, batch_rows=RESULT_ROWS)
        first: list[pa.RecordBatch] = []
        taken = 0
        more = False
        for batch in batches:
            if taken >= RESULT_ROWS:
                more = batch.num_rows > 0
                break
            first.append(batch.slice(0, RESULT_ROWS - taken))
            more = batch.num_rows > RESULT_ROWS - taken
            taken += min(batch.num_rows, RESULT_ROWS - taken)
    except ReplayStoreError as exc:
        return {"columns": [], "rows": [], "error": str(exc), "shown": 0, "more": False}
    table = pa.Table.from_batches(first)
    return {"columns": table.column_names, "rows": cells.rows(table), "error": None, "shown": table.num_rows, "more": more}
