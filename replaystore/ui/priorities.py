"""The Priorities page: per source table, how replay priorities are spread and which samples a
prioritized stream replays most and least (probability ∝ priority^alpha, so the highest and the
lowest priorities). Aggregated by Polars over the priorities table's scan; top-k, never a full sort in Python.
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
    scan = pl.scan_lance(ds, version=ds.version).select("source", "sample_id", "priority", "updated_at")
    sources = scan.group_by("source").agg(
        pl.len().alias("rows"), pl.col("priority").min().alias("min"), pl.col("priority").max().alias("max"), pl.col("priority").sum().alias("total")
    )
    out = []
    for summary in sources.sort("source").collect().iter_rows(named=True):
        mine = scan.filter(pl.col("source") == summary["source"])
        lo, hi = summary["min"], summary["max"]
        width = (hi - lo) / BINS if hi > lo else 1.0
        binned = mine.group_by(((pl.col("priority") - lo) / width).floor().clip(0, BINS - 1).alias("bin")).len().collect()
        centres = lo + (binned["bin"].to_numpy() + 0.5) * width
        out.append(
            {
                **summary,
                "chart": charts.histogram(centres, weights=binned["len"].to_numpy(), x_label="priority", y_label="samples", bins=BINS),
                "most": _rows(mine.top_k(ROWS, by="priority").collect(), summary["total"]),
                "least": _rows(mine.bottom_k(ROWS, by="priority").collect(), summary["total"]),
            }
        )
    return {"table": table, "sources": out}


def _rows(frame: pl.DataFrame, total: float) -> list[dict[str, Any]]:
    """Rows with their share of the source's priority mass (their replay probability at alpha = 1)."""
    share = np.asarray(frame["priority"].to_numpy(), dtype=np.float64) / (total or 1.0)
    return [{**row, "share": s} for row, s in zip(frame.iter_rows(named=True), share)]
