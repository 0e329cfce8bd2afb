"""A sum tree with a min tree beside it, in flat numpy arrays: prioritized draws without an O(n) pass.

Leaves hold non-negative weights (priority^alpha). Every inner node is recomputed as `left + right`
(and `min(left, right)`) whenever a leaf below it changes, never adjusted by a delta, so the tree is
a pure function of its leaves: a tree rebuilt from the same weights after a restart is bit-for-bit
the tree of the uninterrupted run, and float error cannot accumulate over millions of updates.

Costs: `build` O(n); `update` of k leaves O(k log n); `find` of k prefix sums O(k log n), one
vectorised descent for the whole batch. The min tree skips zero weights (they are never drawn), which
is what importance weights are normalised by (as in TorchRL's and Reverb's prioritized samplers).
"""

from __future__ import annotations

import numpy as np

from replaystore.errors import ValidationError


class SumTree:
    """Sums and minima (of positive leaves) over `n` weights; the capacity is the next power of two."""

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(weights) == 0 or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValidationError("weights", "a sum tree needs at least one weight, each finite and ≥ 0")
        self.n = len(weights)
        self.depth = max(int(np.ceil(np.log2(self.n))), 0)
        self.capacity = 1 << self.depth
        self._sum = np.zeros(2 * self.capacity)
        self._min = np.full(2 * self.capacity, np.inf)
        self._sum[self.capacity : self.capacity + self.n] = weights
        self._min[self.capacity : self.capacity + self.n] = np.where(weights > 0, weights, np.inf)
        for level in range(self.depth - 1, -1, -1):  # whole levels at once, bottom-up
            lo, hi = 1 << level, 2 << level
            self._sum[lo:hi] = self._sum[2 * lo : 2 * hi : 2] + self._sum[2 * lo + 1 : 2 * hi : 2]
            self._min[lo:hi] = np.minimum(self._min[2 * lo : 2 * hi : 2], self._min[2 * lo + 1 : 2 * hi : 2])

    @property
    def total(self) -> float:
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """The smallest positive weight (inf when every weight is 0)."""
        return float(self._min[1])

    def weights(self, positions: np.ndarray | slice = slice(None)) -> np.ndarray:
        return self._sum[self.capacity : self.capacity + self.n][positions]

    def update(self, positions: np.ndarray, weights: np.ndarray) -> None:
        """Set leaves (a position given twice keeps its last weight, as numpy assignment does).

        Parents are recomputed level by level; a parent shared by several leaves is simply
        recomputed several times from the same children (cheaper than removing the repeats).
        """
        nodes = self.capacity + np.asarray(positions, dtype=np.int64).reshape(-1)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        total, least = self._sum, self._min
        total[nodes] = weights
        least[nodes] = np.where(weights > 0, weights, np.inf)
        for _ in range(self.depth):
            nodes >>= 1
            left = nodes << 1
            right = left + 1
            total[nodes] = total[left] + total[right]
            least[nodes] = np.minimum(least[left], least[right])

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each target t in [0, total): the first leaf whose prefix sum exceeds t — what
        `np.searchsorted(np.cumsum(weights), t, side="right")` returns — always a positive leaf.

        A descent that would step into an empty right subtree (t ≥ total by rounding) stays left.
        """
        t = np.array(targets, dtype=np.float64).reshape(-1)
        node = np.ones(len(t), dtype=np.int64)
        total = self._sum
        for _ in range(self.depth):
            node <<= 1  # the left child
            left_sum = total[node]
            right = t >= left_sum
            right &= total[node + 1] > 0
            np.subtract(t, left_sum, out=t, where=right)
            node += right
        return node - self.capacity
