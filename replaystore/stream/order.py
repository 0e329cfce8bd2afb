"""Pure functions that decide which rows each rank and worker reads at each step.

Nothing here reads data or keeps state: the order of an epoch is a function of (seed, epoch, source,
pass) only, and the share of a rank is a function of (step counts, world size, rank). That is what
makes the stream deterministic, shardable and resumable: any process can recompute any step.

Layout of a global step: the global batch (world_size × batch_size rows) is laid out source by
source, and global slot `j` belongs to rank `j % world_size`. Each rank therefore gets an equal
batch and a balanced share of every source, as one contiguous slice of each source's rows of the
step; the step's global rows themselves never depend on the world size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one (seed, epoch, source, step, ...) key.

    numpy seeds a list of ints below 2**32 with one uint32 word each; given those words as an array,
    it makes the same generator at a third of the cost (prioritized draws make one every step)."""
    words = [int(seed), *map(int, key)]
    entropy = np.array(words, np.uint32) if min(words) >= 0 and max(words) < 2**32 else words
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def permutation(n: int, seed: int, epoch: int, source: int, pass_: int = 0) -> np.ndarray:
    """The shuffled order of `n` rows for one pass over a source."""
    return rng(seed, epoch, source, pass_).permutation(n)


def cursors(counts: np.ndarray) -> np.ndarray:
    """Rows of each source used before each step: exclusive cumulative sum over steps."""
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], axis=0, out=out[1:])
    return out


def rank_share(counts: np.ndarray, world_size: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, offset) of every (step, source) cell that `rank` reads.

    `counts[step, source]` are global rows per step. Slots of a step are numbered source by source;
    slot j goes to rank j % world_size. A rank's rows of a source are then a contiguous run of that
    source's rows at `offset` (counted within the step), and rank totals differ by at most one row.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    ends = np.cumsum(counts, axis=1)
    starts = ends - counts

    def owned(x: np.ndarray, r: int) -> np.ndarray:  # slots j < x with j % world_size == r
        return np.maximum(0, (x - r + world_size - 1) // world_size)

    rows = owned(ends, rank) - owned(starts, rank)
    before = sum(owned(ends, r) - owned(starts, r) for r in range(rank)) if rank else np.zeros_like(counts)
    return rows, before


def worker_steps(steps: int, num_workers: int, worker: int, start: int = 0, block: int = 1) -> np.ndarray:
    """Steps a DataLoader worker produces from `start` on: blocks of `block` consecutive steps dealt
    round-robin from worker 0. With `block=1` that is the order in which a plain DataLoader collects
    them, so any number of workers yields the single-process sequence; `stream.loader` uses longer
    blocks (each worker then reads a contiguous share of a sequential source) and puts the steps
    back in order itself."""
    ahead = np.arange(start, steps)
    return ahead[((ahead - start) // block) % num_workers == worker]


def pass_positions(start: int, count: int, n: int, order: Callable[[int], np.ndarray]) -> np.ndarray:
    """Rows `[start, start+count)` of the endless sequence pass 0, pass 1, ... of a source's order."""
    if count == 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    idx = np.arange(start, start + count, dtype=np.int64)
    passes, within = np.divmod(idx, n)
    if passes[0] == passes[-1]:
        return np.asarray(order(int(passes[0])), dtype=np.int64)[within]
    out = np.empty(count, dtype=np.int64)
    for p in np.unique(passes):
        mask = passes == p
        out[mask] = np.asarray(order(int(p)), dtype=np.int64)[within[mask]]
    return out
