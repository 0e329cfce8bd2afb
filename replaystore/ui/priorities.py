"""The Priorities page: per source table, how replay priorities are spread and which samples a
prioritized stream replays most and least (probability ∝ priority^alpha, so the highest and the
lowest priorities).

Only the `source` and `priority` columns are scanned (about 16 bytes a row); statistics, histograms
and top/bottom-k are computed on them by Polars and numpy, and the few rows shown are then taken
by position with all their columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.ui import charts

ROWS = 10
BINS = 40


def tables(store: Store) -> list[str]:
    return [name for name in store.table_names() if store.kind(name) == Kind.PRIORITIES.value]


def report(store: Store, table: str) -> dict[str, Any]:
    ds = store.dataset(table)
    read = pl.from_arrow(ds.to_table(columns=["source", "priority"]))
    assert isinstance(read, pl.DataFrame)
    frame = read.with_row_index("row")
    summary = frame.group_by("source").agg(
        pl.len().alias("rows"), pl.col("priority").min().alias("min"), pl.col("priority").max().alias("max"), pl.col("priority").sum().alias("total")
    )
    out = []
    for row in summary.sort("source").iter_rows(named=True):
        mine = frame.filter(pl.col("source") == row["source"])
        most = mine.top_k(ROWS, by="priority").sort("priority", descending=True)
        least = mine.bottom_k(ROWS, by="priority").sort("priority")
        shown = ds.take(np.concatenate([most["row"].to_numpy(), least["row"].to_numpy()]).astype(np.int64), columns=["sample_id", "priority", "updated_at"])
        rows = shown.to_pylist()
        out.append(
            {
                **row,
                "chart": charts.histogram(mine["priority"].to_numpy(), x_label="priority", y_label="samples", bins=BINS),
                "most": _rows(rows[: most.height], row["total"]),
                "least": _rows(rows[most.height :], row["total"]),
            }
        )
    return {"table": table, "sources": out}


def _rows(rows: list[dict[str, Any]], total: float) -> list[dict[str, Any]]:
    """Rows with their share of the source's priority mass (their replay probability at alpha = 1)."""
    return [{**r, "share": r["priority"] / (total or 1.0)} for r in rows]
