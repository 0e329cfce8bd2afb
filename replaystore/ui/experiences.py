"""The Experiences page: per workspace, how many lessons are active or archived, how often they are
retrieved and help, which help most and least, and which the next `refine` would archive.

Counts and distributions are aggregated by Polars over a projected Lance scan (four small columns),
the lesson lists are top-k queries, and the refine preview reads with `refine`'s own filter.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from replaystore.experiences import refine_rule
from replaystore.predicates import literal
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.ui import cells, charts

LESSONS = 8
LESSON_COLUMNS = ["experience_id", "when_to_use", "content", "freq", "utility", "status"]


def tables(store: Store) -> list[str]:
    return [name for name in store.table_names() if store.kind(name) == Kind.EXPERIENCES.value]


def report(store: Store, table: str, freq_threshold: int = 5, utility_threshold: float = 0.5) -> dict[str, Any]:
    ds = store.dataset(table)
    scan = pl.scan_lance(ds, version=ds.version)
    counts = scan.select("workspace", "status").group_by("workspace", "status").len().collect()
    spaces: dict[str, dict[str, Any]] = {}
    for row in counts.sort("workspace").iter_rows(named=True):
        spaces.setdefault(row["workspace"], {"active": 0, "archived": 0})[row["status"]] = row["len"]
    rule = refine_rule(freq_threshold, utility_threshold)
    out = []
    for workspace, status in spaces.items():
        mine = scan.filter(pl.col("workspace") == workspace)
        freq = mine.group_by("freq").len().collect()
        utility = mine.group_by("utility").len().collect()
        useful = mine.filter(pl.col("status") == "active").select(LESSON_COLUMNS)
        ratio = (pl.col("utility").cast(pl.Float64) / pl.col("freq").cast(pl.Float64)).alias("ratio")
        where = f"{rule} AND workspace = {literal(workspace)}"
        out.append(
            {
                "workspace": workspace,
                "active": status.get("active", 0),
                "archived": status.get("archived", 0),
                "freq_chart": charts.histogram(freq["freq"].to_numpy(), weights=freq["len"].to_numpy(), x_label="times retrieved (freq)", y_label="lessons"),
                "utility_chart": charts.histogram(
                    utility["utility"].to_numpy(), weights=utility["len"].to_numpy(), x_label="times helpful (utility)", y_label="lessons"
                ),
                "most": _lessons(useful.filter(pl.col("utility") > 0).sort(["utility", "freq"], descending=[True, False]).head(LESSONS).collect()),
                "least": _lessons(
                    useful.filter(pl.col("freq") > 0).with_columns(ratio).sort(["ratio", "freq"], descending=[False, True]).head(LESSONS).collect()
                ),
                "refine_count": ds.count_rows(filter=where),
                "refine": _lessons(pl.from_arrow(ds.to_table(columns=LESSON_COLUMNS, filter=where, limit=LESSONS))),
            }
        )
    return {"table": table, "workspaces": out, "freq_threshold": freq_threshold, "utility_threshold": utility_threshold, "rule": rule}


def _lessons(frame: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": r["experience_id"],
            "when_to_use": cells.text(r["when_to_use"], 120),
            "content": cells.text(r["content"], 160),
            "freq": r["freq"],
            "utility": r["utility"],
            "status": r["status"],
        }
        for r in frame.iter_rows(named=True)
    ]
