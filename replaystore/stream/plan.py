"""An epoch's plan as pure functions of its inputs: global rows per (step, source), and one rank's share.

Nothing here reads data or holds state (after Mosaic Streaming's `partition/` and `batching/`): any
process can recompute any step's plan from (mixing, global batch, snapshot sizes, world size, rank),
which is what makes the stream shardable, resumable and the same at every world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replaystore.errors import ValidationError
from replaystore.stream.mixing import Mixing
from replaystore.stream.order import cursors, rank_share
from replaystore.stream.samplers import Draw

MAX_STEPS = 1 << 24  # an epoch longer than this means its source gets no rows: refuse, do not loop


@dataclass(frozen=True)
class Plan:
    """One epoch's layout: global rows per (step, source), and this rank's slice of them."""

    counts: np.ndarray  # global rows per (step, source)
    cursors: np.ndarray  # global rows of each source used before each step, this epoch
    rows: np.ndarray  # this rank's rows per (step, source)
    offsets: np.ndarray  # this rank's first row within each (step, source)'s global rows

    @property
    def steps(self) -> int:
        return len(self.counts)


def step_counts(mixing: Mixing | None, steps: int, global_batch: int, sources: int) -> np.ndarray:
    """Global rows of each source in each of `steps` steps."""
    if mixing is None:
        return np.full((steps, 1), global_batch, dtype=np.int64)
    return mixing.counts(steps, global_batch, sources)


def epoch_counts(mixing: Mixing | None, global_batch: int, sources: int, *, epoch_source: int, rows: int, drop_last: bool) -> np.ndarray:
    """Steps of an epoch that ends when the epoch-defining source has given `rows` rows: the last step
    is cut to what is left (dropped when `drop_last` and short)."""
    steps = -(-rows // global_batch) + 1
    while True:
        counts = step_counts(mixing, steps, global_batch, sources)
        spent = np.cumsum(counts[:, epoch_source])
        if spent[-1] >= rows:
            break
        if steps > MAX_STEPS:
            raise ValidationError("mixing", f"source {epoch_source} gets no rows, so the epoch never ends")
        steps *= 2
    last = int(np.searchsorted(spent, rows))
    counts = counts[: last + 1].copy()
    counts[last, epoch_source] -= int(spent[last] - rows)
    if drop_last and counts[last].sum() < global_batch:
        counts = counts[:last]
    return counts


def plan_epoch(counts: np.ndarray, world_size: int, rank: int, start: np.ndarray | None = None) -> Plan:
    """`rank`'s share of an epoch's counts; `start`: rows of each source used before the first step
    (an epoch resumed at another global batch size continues where the checkpoint stopped)."""
    rows, offsets = rank_share(counts, world_size, rank)
    before = cursors(counts) if start is None else cursors(counts) + np.asarray(start, dtype=np.int64)
    return Plan(counts, before, rows, offsets)


CellPlan = tuple[int, int, int, int]  # a (step, source) cell's cursor, total, offset and count


def cell_plans(plan: Plan, steps: list[int]) -> list[list[CellPlan]]:
    """Each of `steps`' cells per source, as Python ints converted once for all of them (four numpy
    scalars per cell cost the stream's producer more than the sampler's own work)."""
    columns = (plan.cursors[steps].tolist(), plan.counts[steps].tolist(), plan.offsets[steps].tolist(), plan.rows[steps].tolist())
    return [list(zip(*per_step)) for per_step in zip(*columns)]


def forward_runs(cells: list[CellPlan], n: int) -> list[np.ndarray] | None:
    """A `Sequential` source's positions for a chunk's cells without a `Draw` per cell: views of one
    `arange` where each cell starts where the one before ended (one rank's forward scan), an `arange`
    per cell otherwise; None when a cell wraps past row n-1 (the sampler's passes handle that).
    A draw per cell cost a 3-source mixture more than a tenth of its producer's time."""
    starts = [(cursor + offset) % n if n else 0 for cursor, _, offset, _ in cells]
    counts = [cell[3] for cell in cells]
    if any(start + count > n for start, count in zip(starts, counts)):
        return None
    if all(starts[k + 1] == starts[k] + counts[k] for k in range(len(cells) - 1)):
        first = starts[0]
        whole = np.arange(first, starts[-1] + counts[-1], dtype=np.int64)
        return [whole[start - first : start - first + count] for start, count in zip(starts, counts)]
    return [np.arange(start, start + count, dtype=np.int64) for start, count in zip(starts, counts)]


def draw(cell: CellPlan, *, n: int, seed: int, epoch: int, source: int, step: int, global_step: int) -> Draw:
    """A (source, step) cell of a plan as a sampler sees it."""
    return Draw(n, seed, epoch, source, step, global_step, *cell)
