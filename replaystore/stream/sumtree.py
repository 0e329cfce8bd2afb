"""A sum tree with a min tree beside it, in flat numpy arrays: prioritized draws without an O(n) pass.

Leaves hold non-negative weights (priority^alpha). Every inner node is recomputed as `left + right`
(and `min(left, right)`) whenever a leaf below it changes, never adjusted by a delta, so the tree is
a pure function of its leaves: a tree rebuilt from the same weights after a restart is bit-for-bit
the tree of the uninterrupted run, and float error cannot accumulate over millions of updates.

Costs: `build` O(n); `update` of k leaves O(k log n); `find` of k prefix sums O(k log n). The min
tree skips zero weights (they are never drawn), which is what importance weights are normalised by
(as in TorchRL's and Reverb's prioritized samplers).

Two kernels walk the same arrays with the same float operations, so they give the same bits: numba
loops (the `fast` extra) and numpy vector calls where numba is absent. Both go level by level, all
rows of a batch at each level: on a large tree the cost is cache misses, and a level's loads are
independent, so the CPU overlaps them (a depth-first descent per row waits for each miss in turn).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from replaystore.errors import ValidationError


def compiled_available() -> bool:
    """Whether the numba kernels can be used (the `fast` extra is installed)."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(update, find) compiled with numba on first use; cached on disk, so later processes (DataLoader
    workers, restarts) load them instead of compiling."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def update(total: np.ndarray, least: np.ndarray, capacity: int, depth: int, positions: np.ndarray, weights: np.ndarray) -> None:
        nodes = capacity + positions
        for i in range(len(nodes)):  # every leaf first: a repeated position keeps its last weight
            total[nodes[i]] = weights[i]
            least[nodes[i]] = weights[i] if weights[i] > 0 else np.inf
        for _ in range(depth):  # level by level: the loads of one level are independent, so misses overlap
            for i in range(len(nodes)):
                node = nodes[i] >> 1
                nodes[i] = node
                left = node << 1
                total[node] = total[left] + total[left + 1]
                least[node] = min(least[left], least[left + 1])

    @numba.njit(cache=True, nogil=True)
    def find(total: np.ndarray, capacity: int, depth: int, targets: np.ndarray) -> np.ndarray:
        t = targets.copy()
        nodes = np.ones(len(t), np.int64)
        for _ in range(depth):  # level by level, as in `update`
            for i in range(len(t)):
                node = nodes[i] << 1
                if t[i] >= total[node] and total[node + 1] > 0:
                    t[i] -= total[node]
                    node += 1
                nodes[i] = node
        return nodes - capacity

    return update, find


class SumTree:
    """Sums and minima (of positive leaves) over `n` weights; the capacity is the next power of two."""

    def __init__(self, weights: np.ndarray, *, compiled: bool | None = None) -> None:
        """`compiled`: use the numba kernels (default: when the `fast` extra is installed)."""
        self.compiled = compiled_available() if compiled is None else compiled
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
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if self.compiled:
            _kernels()[0](self._sum, self._min, self.capacity, self.depth, positions, weights)
            return
        nodes = self.capacity + positions
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
        if self.compiled:
            return _kernels()[1](self._sum, self.capacity, self.depth, np.asarray(targets, dtype=np.float64).reshape(-1))
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
