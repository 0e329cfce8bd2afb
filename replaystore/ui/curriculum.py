"""The Curriculum page: every stored ordering, the score histograms of its source, and its pacing:
the admitted fraction c(t) and the exact admitted count the sampler would use over steps.

Scores tie (many samples share a loss or a length), and tied samples share a percentile, so the
sampler admits a whole tie group at once: the count climbs in steps where c(t)·n would climb
smoothly. The page says how many tie groups there are and how big the largest is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from replaystore.curriculum import CurriculumSampler, SqrtPacing, load_ordering
from replaystore.curriculum.pacing import Pacing, schedule_length
from replaystore.curriculum.scoring import SCORES
from replaystore.store import Store
from replaystore.ui import charts

ORDERINGS = "curriculum_orderings"
POINTS = 300  # steps drawn in the pacing charts


def orderings(store: Store) -> list[dict[str, Any]]:
    """Name, source, samples and definition of each ordering (aggregated by Polars on three columns)."""
    if not store.exists(ORDERINGS):
        return []
    ds = store.dataset(ORDERINGS)
    grouped = (
        pl.scan_lance(ds, version=ds.version)
        .select("ordering", "source", "definition")
        .group_by("ordering")
        .agg(pl.col("source").first(), pl.col("definition").first(), pl.len().alias("samples"))
        .sort("ordering")
        .collect()
    )
    return list(grouped.iter_rows(named=True))


def report(store: Store, name: str, c0: float = 0.3, total: int = 100) -> dict[str, Any]:
    ordering = load_ordering(store, name)
    stored = ordering.definition.pacing
    pacing: Pacing = stored if stored is not None else SqrtPacing(c0, total)
    sampler = CurriculumSampler(ordering.difficulty, pacing)
    last = int(schedule_length(pacing) * 1.1) + 1
    steps = np.unique(np.linspace(0, last, min(POINTS, last + 1)).round().astype(np.int64))
    competence = np.asarray(pacing.competence(steps), dtype=np.float64)
    admitted = np.asarray(sampler.admitted_count(steps), dtype=np.float64)
    _, groups = np.unique(ordering.difficulty[~np.isnan(ordering.difficulty)], return_counts=True)
    n = len(sampler)
    return {
        "name": name,
        "source": ordering.source,
        "definition": ordering.definition.to_dict(),
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
        "scores": _scores(store, ordering.source),
    }


def _scores(store: Store, source: str) -> list[dict[str, Any]]:
    """One histogram per metric scored for `source`."""
    if not store.exists(SCORES):
        return []
    ds = store.dataset(SCORES)
    frame = pl.scan_lance(ds, version=ds.version).filter(pl.col("source") == source).select("metric", "value", "scorer").collect()
    out = []
    for (metric,), part in frame.sort("metric").group_by("metric", maintain_order=True):
        out.append({"metric": metric, "scorer": part["scorer"][0], "rows": part.height, "chart": charts.histogram(part["value"].to_numpy(), x_label=f"{metric} value", y_label="samples")})
    return out
