"""The Curriculum page: every stored ordering, the score histograms of its source, and its pacing:
the admitted fraction c(t) and the exact admitted count the sampler would use over steps. Only
short and numeric columns are scanned; the per-ordering JSON definition is read from one row.

Scores tie (many samples share a loss or a length), and tied samples share a percentile, so the
sampler admits a whole tie group at once: the count climbs in steps where c(t)·n would climb
smoothly. The page says how many tie groups there are and how big the largest is.
"""

from __future__ import annotations

from typing import Any

import lance
import numpy as np
import polars as pl

from replaystore.curriculum import CurriculumSampler, OrderingDefinition, SqrtPacing
from replaystore.curriculum.pacing import Pacing, schedule_length
from replaystore.curriculum.scoring import SCORES
from replaystore.errors import NotFoundError
from replaystore.predicates import literal
from replaystore.store import Store
from replaystore.ui import charts

ORDERINGS = "curriculum_orderings"
POINTS = 300  # steps drawn in the pacing charts


def orderings(store: Store) -> list[dict[str, Any]]:
    """Name, source, samples and definition of each ordering: counted by Polars on the two short
    columns, each definition (the same on every row of an ordering) read from one row."""
    if not store.exists(ORDERINGS):
        return []
    ds = store.dataset(ORDERINGS)
    grouped = pl.scan_lance(ds, version=ds.version).select("ordering", "source").group_by("ordering").agg(pl.col("source").first(), pl.len().alias("samples"))
    out = list(grouped.sort("ordering").collect().iter_rows(named=True))
    for row in out:
        row["definition"] = _one(ds, row["ordering"], "definition")
    return out


def report(store: Store, name: str, c0: float = 0.3, total: int = 100) -> dict[str, Any]:
    """Pacing and admitted counts of ordering `name`, from its `difficulty` column alone (ids are not read)."""
    ds = store.dataset(ORDERINGS)
    difficulty = ds.to_table(columns=["difficulty"], filter=f"ordering = {literal(name)}")["difficulty"].to_numpy().astype(np.float64)
    if difficulty.size == 0:
        raise NotFoundError(f"no ordering '{name}' in {ORDERINGS}")
    definition = OrderingDefinition.from_json(_one(ds, name, "definition"))
    source = _one(ds, name, "source")
    stored = definition.pacing
    pacing: Pacing = stored if stored is not None else SqrtPacing(c0, total)
    sampler = CurriculumSampler(difficulty, pacing)
    last = int(schedule_length(pacing) * 1.1) + 1
    steps = np.unique(np.linspace(0, last, min(POINTS, last + 1)).round().astype(np.int64))
    competence = np.asarray(pacing.competence(steps), dtype=np.float64)
    admitted = np.asarray(sampler.admitted_count(steps), dtype=np.float64)
    _, groups = np.unique(difficulty[~np.isnan(difficulty)], return_counts=True)
    n = len(sampler)
    return {
        "name": name,
        "source": source,
        "definition": definition.to_dict(),
        "pacing": pacing.to_dict(),
        "pacing_stored": stored is not None,
        "samples": n,
        "tie_groups": len(groups),
        "largest_tie": int(groups.max()) if len(groups) else 0,
        "first_group": int(sampler.admitted_count(0)),
        "at_start": float(pacing.competence(0)) * n,
        "competence_chart": charts.lines(steps, {"c(t)": competence}, y_label="admitted fraction c(t)", x_label="step", y_max=1.0),
        "admitted_chart": charts.lines(
            steps, {"admitted by the sampler": admitted, "c(t)·n": competence * n}, y_label="admitted samples", x_label="step", y_max=float(n)
        ),
        "scores": _scores(store, source),
    }


def _one(ds: lance.LanceDataset, ordering: str, column: str) -> str:
    """A column that holds the same value on every row of an ordering, read from its first row."""
    return str(ds.to_table(columns=[column], filter=f"ordering = {literal(ordering)}", limit=1)[column][0].as_py())


def _scores(store: Store, source: str) -> list[dict[str, Any]]:
    """One histogram per metric scored for `source` (values only; each metric's scorer from one row)."""
    if not store.exists(SCORES):
        return []
    ds = store.dataset(SCORES)
    frame = pl.scan_lance(ds, version=ds.version).filter(pl.col("source") == source).select("metric", "value").collect()
    out = []
    for (metric,), part in frame.sort("metric").group_by("metric", maintain_order=True):
        where = f"source = {literal(source)} AND metric = {literal(str(metric))}"
        scorer = ds.to_table(columns=["scorer"], filter=where, limit=1)["scorer"][0].as_py()
        out.append(
            {
                "metric": metric,
                "scorer": scorer,
                "rows": part.height,
                "chart": charts.histogram(part["value"].to_numpy(), x_label=f"{metric} value", y_label="samples"),
            }
        )
    return out
