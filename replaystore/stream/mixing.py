"""How many rows of each source go into every global batch.

A mixing policy turns (steps, global batch size, number of sources) into integer counts per step
and source that always sum to the global batch. Counts are apportioned with a carried remainder,
so proportions hold exactly over time (not just in expectation) and every step is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from replaystore.checks import is_finite_number
from replaystore.errors import ValidationError

Weights = Sequence[float] | Callable[[int], Sequence[float]]


class Mixing(Protocol):
    def counts(self, steps: int, global_batch: int, sources: int) -> np.ndarray: ...


def _check_weights(values: Sequence[float], sources: int, step: int) -> np.ndarray:
    w = np.asarray(values, dtype=np.float64)
    if w.shape != (sources,):
        raise ValidationError("weights", f"need one weight per source ({sources}), got {len(w)} at step {step}")
    if not all(is_finite_number(x) and x >= 0 for x in w) or w.sum() <= 0:
        raise ValidationError("weights", f"must be finite, ≥ 0 and not all zero, got {list(w)} at step {step}")
    return w / w.sum()


def apportion(targets: np.ndarray, total: int, carry: np.ndarray) -> np.ndarray:
    """Integer shares of `total` for real `targets` (summing to total), carrying remainders forward."""
    want = targets + carry
    base = np.maximum(np.floor(want), 0).astype(np.int64)  # a zero weight with a negative carry
    short = total - int(base.sum())
    if short > 0:
        base[np.argsort(-(want - base), kind="stable")[:short]] += 1
    elif short < 0:  # only after clipping at 0: take back from those furthest over their target
        base[np.argsort(np.where(base > 0, want - base, np.inf), kind="stable")[:-short]] -= 1
    carry[:] = want - base
    return base


@dataclass(frozen=True)
class Proportions:
    """Rows per source ∝ weights, constant or a function of the step (time-varying mixtures)."""

    weights: Weights

    def counts(self, steps: int, global_batch: int, sources: int) -> np.ndarray:
        if not callable(self.weights):
            fixed = _fixed_counts(_check_weights(self.weights, sources, 0), steps, global_batch)
            if fixed is not None:
                return fixed
        out = np.zeros((steps, sources), dtype=np.int64)
        carry = np.zeros(sources)
        for step in range(steps):
            w = _check_weights(self.weights(step) if callable(self.weights) else self.weights, sources, step)
            out[step] = apportion(w * global_batch, global_batch, carry)
        return out


def _fixed_counts(w: np.ndarray, steps: int, global_batch: int) -> np.ndarray | None:
    """`apportion` over all steps at once for constant weights: the carried remainder makes the
    cumulative count of a source floor(target so far), plus one for the largest remainders. None
    when that would ask a source to give rows back (weights under one row per step): use the loop."""
    target = np.outer(np.arange(1, steps + 1), w * global_batch)
    base = np.floor(target + 1e-9).astype(np.int64)
    short = np.arange(1, steps + 1) * global_batch - base.sum(axis=1)
    rank = np.argsort(np.argsort(-(target - base), axis=1, kind="stable"), axis=1, kind="stable")
    cumulative = base + (rank < short[:, None])
    out = np.diff(cumulative, axis=0, prepend=0)
    return out if (out >= 0).all() else None


@dataclass(frozen=True)
class ExactK:
    """Exactly `k` rows of source `replay` in every global batch, across all ranks (GeRe's batch
    interpolation); the other sources share the rest by `weights` (equal by default)."""

    k: int
    replay: int = 1
    weights: Sequence[float] | None = None

    def counts(self, steps: int, global_batch: int, sources: int) -> np.ndarray:
        if not isinstance(self.k, int) or not 0 <= self.k < global_batch:
            raise ValidationError("k", f"must be an integer in [0, global batch {global_batch}), got {self.k!r}")
        if not 0 <= self.replay < sources or sources < 2:
            raise ValidationError("replay", f"must name one of {sources} sources, besides at least one other")
        others = [i for i in range(sources) if i != self.replay]
        rest = Proportions(self.weights or [1.0] * len(others)).counts(steps, global_batch - self.k, len(others))
        out = np.zeros((steps, sources), dtype=np.int64)
        out[:, others] = rest
        out[:, self.replay] = self.k
        return out
