"""Which rows a buffer keeps: the policy's per-class quota first, then the byte budget, both by rank.

Pure and vectorised over (class, rank, bytes) arrays so the same rule serves `add`, `rebalance`
and `configure`, and can be property-tested without a store. Both cuts keep a best-ranked prefix
of every class, so ranks stay 1..n per class and cutting never picks a random subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replaystore.exemplars.policies import Quota


@dataclass(frozen=True)
class Plan:
    keep: np.ndarray  # bool per input row
    rank: np.ndarray  # the row's 1-based position in its class after sorting by rank
    requested_bytes: int  # what the policy alone would keep
    kept_bytes: int

    @property
    def over_budget(self) -> bool:
        """The byte budget, not the policy, had to cut rows."""
        return self.kept_bytes < self.requested_bytes


def plan_keep(class_ids: np.ndarray, ranks: np.ndarray, nbytes: np.ndarray, quota: Quota, exemplar_bytes: int | None) -> Plan:
    """Keep each class's best-ranked rows within `quota`, then the globally best-ranked within `exemplar_bytes`.

    The budget cut walks rank 1 of every class, then rank 2, ... (ties by class id), so a budget
    shortfall evicts the lowest-ranked rows of all classes evenly rather than a whole class.
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    nbytes = np.asarray(nbytes, dtype=np.int64)
    n = len(class_ids)
    order = np.lexsort((np.asarray(ranks), class_ids))
    cls, size = class_ids[order], nbytes[order]
    first = np.r_[True, cls[1:] != cls[:-1]] if n else np.zeros(0, dtype=bool)
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    position = np.arange(n) - start + 1
    cumulative = np.cumsum(size)
    class_bytes = cumulative - (cumulative - size)[start]
    within = np.ones(n, dtype=bool)
    if quota.rows is not None:
        within &= position <= quota.rows
    if quota.nbytes is not None:
        within &= class_bytes <= quota.nbytes

    rank = np.empty(n, dtype=np.int64)
    rank[order] = position
    keep = np.zeros(n, dtype=bool)
    keep[order] = within
    requested = int(nbytes[keep].sum())
    if exemplar_bytes is not None and requested > exemplar_bytes:
        candidates = np.flatnonzero(keep)
        by_rank = candidates[np.lexsort((class_ids[candidates], rank[candidates]))]
        fits = np.cumsum(nbytes[by_rank]) <= exemplar_bytes
        keep[by_rank[~fits]] = False
    return Plan(keep, rank, requested, int(nbytes[keep].sum()))
