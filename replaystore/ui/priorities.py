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
    """Per source: counts, range, a histogram and the top and bottom rows, in one pass of Polars' engine."""
    ds = store.dataset(table)
    scan = pl.scan_lance(ds, version=ds.version).select("source", "sample_id", "priority", "updated_at")
    low, high = pl.col("priority").min().over("source"), pl.col("priority").max().over("source")
    width = pl.when(high > low).then((high - low) / BINS).otherwise(1.0)
    binned = ((pl.col("priority") - low) / width).floor().clip(0, BINS - 1)
    summary, histogram, most, least = pl.collect_all(
        [
            scan.group_by("source").agg(
                pl.len().alias("rows"), pl.col("priority").min().alias("min"), pl.col("priority").max().alias("max"), pl.col("priority").sum().alias("total")
            ),
            scan.select("source", binned.alias("bin"), low.alias("low"), width.alias("width")).group_by("source", "bin").agg(pl.len(), pl.first("low"), pl.first("width")),
            scan.group_by("source").agg(pl.all().top_k_by("priority", ROWS)).explode(pl.exclude("source")),
            scan.group_by("source").agg(pl.all().bottom_k_by("priority", ROWS)).explode(pl.exclude("source")),
        ]
    )
    out = []
    for row in summary.sort("source").iter_rows(named=True):
        mine = histogram.filter(pl.col("source") == row["source"])
        centres = mine["low"].to_numpy() + (mine["bin"].to_numpy() + 0.5) * mine["width"].to_numpy()
        out.append(
            {
                **row,
                "chart": charts.histogram(centres, weights=mine["len"].to_numpy(), x_label="priority", y_label="samples", bins=BINS),
                "most": _rows(most.filter(pl.col("source") == row["source"]).sort("priority", descending=True), row["total"]),
                "least": _rows(least.filter(pl.col("source") == row["source"]).sort("priority"), row["total"]),
            }
        )
    return {"table": table, "sources": out}


def _rows(frame: pl.DataFrame, total: float) -> list[dict[str, Any]]:
    """Rows with their share of the source's priority mass (their replay probability at alpha = 1)."""
    share = np.asarray(frame["priority"].to_numpy(), dtype=np.float64) / (total or 1.0)
    return [{**row, "share": s} for row, s in zip(frame.iter_rows(named=True), share)]
