"""`CurriculumSampler`: which rows a training step may draw, by difficulty and pacing. Torch-free.

How a stream uses it
--------------------
1. Get one difficulty percentile per row of the source table, in the row order the stream reads
   (`replaystore.curriculum.aligned_difficulty(store, ordering, source=...)` or
   `curriculum_sampler(store, ordering)`); NaN marks a row the ordering does not cover (never drawn).
2. `sampler = CurriculumSampler(difficulty, pacing, seed=...)`.
3. At each training step t (0, 1, 2, … — steps may skip but never go back):
   `rows = sampler.indices(t, batch_size)` gives int64 row positions; read those rows (e.g. Lance
   `take`). `sampler.batches(batch_size, n)` yields the next n steps' positions instead.
   Data-parallel ranks each build the same sampler (same seed), draw the global batch and keep
   their slice, `rows[rank::world_size]`: all ranks agree without talking to each other.
4. Checkpoint `sampler.state_dict()` with the model; after a restart build the sampler with the same
   difficulty, pacing and seed and call `load_state_dict(state)`: it continues the exact sequence.

Guarantees: at step t only rows with difficulty ≤ c(t) (+1e-12 for rounding) are drawn (at least
the easiest tie group is always admitted, so a small c0 cannot stall training). Rows are drawn
uniformly without replacement in passes:
every admitted row is drawn once before any row repeats, and a row admitted mid-pass joins the
current pass. The sequence depends only on the seed, the difficulties, the pacing and the
(step, batch_size) calls, so it is the same on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from replaystore.curriculum.pacing import Pacing, pacing_from_dict
from replaystore.errors import ValidationError

STATE_VERSION = 1
TOLERANCE = 1e-12  # c(t) is computed in floating point: 0.8 may come out as 0.7999…, which must still admit 0.8


def _int_at_least(value: Any, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValidationError(name, f"must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


class CurriculumSampler:
    """Draw row positions admitted by a pacing from per-row difficulty percentiles."""

    def __init__(self, difficulty: Any, pacing: Pacing, seed: int = 0) -> None:
        d = np.asarray(difficulty, dtype=np.float64)
        if d.ndim != 1 or len(d) == 0:
            raise ValidationError("difficulty", f"must be a non-empty 1-D array of percentiles, got shape {d.shape}")
        valid = ~np.isnan(d)
        if not valid.any():
            raise ValidationError("difficulty", "every row is NaN: the ordering covers none of these rows")
        if np.any((d[valid] < 0) | (d[valid] > 1)):
            raise ValidationError("difficulty", "percentiles must be in [0, 1] (NaN for rows outside the ordering)")
        if not isinstance(pacing, Pacing):
            raise ValidationError("pacing", f"must be a Pacing, got {type(pacing).__name__}")
        self.pacing = pacing
        self.seed = _int_at_least(seed, "seed", minimum=0)
        self._difficulty = d
        self._digest = hashlib.sha256(d.tobytes()).hexdigest()
        self._order = np.argsort(d, kind="stable")[: int(valid.sum())]  # NaN sorts last and is cut
        self._sorted = d[self._order]
        self._floor = int(np.searchsorted(self._sorted, self._sorted[0], side="right"))
        self._rng = np.random.default_rng(self.seed)
        self._last_step = -1
        self._included = 0
        # The rows of the current pass not yet drawn are `_pool[:_remaining]`; the buffer is sized once
        # so a step costs O(batch), not O(rows), however the admitted set grows.
        self._pool = np.empty(len(self._order), dtype=np.int64)
        self._remaining = 0
        self._passes = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Ray and shared-memory pickling hand numpy arrays back read-only; the pool is written in place.
        state["_pool"] = np.array(state["_pool"])
        self.__dict__.update(state)

    def __len__(self) -> int:
        """Rows the sampler can ever draw (those with a difficulty)."""
        return len(self._order)

    @property
    def next_step(self) -> int:
        """The step after the last one drawn (0 for a fresh sampler)."""
        return self._last_step + 1

    def admitted_count(self, step: Any) -> Any:
        """How many rows are admitted at `step` (int, or an array for an array of steps)."""
        threshold = self.pacing.competence(step) + TOLERANCE
        counts = np.maximum(np.searchsorted(self._sorted, threshold, side="right"), self._floor)
        return int(counts) if np.ndim(counts) == 0 else counts

    def admitted(self, step: int) -> np.ndarray:
        """Row positions admitted at `step`, ascending."""
        return np.sort(self._order[: self.admitted_count(step)])

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        """The row positions of the batch for `step` (int64, length `batch_size`)."""
        step = _int_at_least(step, "step", minimum=0)
        batch_size = _int_at_least(batch_size, "batch_size")
        if step <= self._last_step:
            raise ValidationError("step", f"must be > the last step drawn ({self._last_step}); rewind with load_state_dict")
        count = self.admitted_count(step)
        if count > self._included:  # newly admitted rows join the current pass
            grown = count - self._included
            self._pool[self._remaining : self._remaining + grown] = self._order[self._included : count]
            self._remaining += grown
            self._included = count
        parts = []
        need = batch_size
        while need:
            if not self._remaining:
                self._pool[: self._included] = self._order[: self._included]
                self._remaining = self._included
                self._passes += 1
            take = min(need, self._remaining)
            parts.append(self._draw(take))
            need -= take
        self._last_step = step
        return np.concatenate(parts)

    def _draw(self, take: int) -> np.ndarray:
        """Draw `take` rows uniformly without replacement from the pool; refill their slots from its tail."""
        m = self._remaining
        chosen = self._rng.choice(m, take, replace=False)
        out = self._pool[chosen]
        tail = m - take
        holes = chosen[chosen < tail]
        free = np.ones(take, dtype=bool)
        free[chosen[chosen >= tail] - tail] = False
        self._pool[holes] = self._pool[tail:m][free]
        self._remaining = tail
        return out

    def batches(self, batch_size: int, num_steps: int) -> Iterator[np.ndarray]:
        """Yield the next `num_steps` batches, from `next_step` on."""
        start = self.next_step
        for step in range(start, start + _int_at_least(num_steps, "num_steps", minimum=0)):
            yield self.indices(step, batch_size)

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence (plain Python and one int64 array)."""
        return {
            "state_version": STATE_VERSION,
            "seed": self.seed,
            "rows": len(self._difficulty),
            "difficulty_sha256": self._digest,
            "pacing": self.pacing.to_dict(),
            "last_step": self._last_step,
            "included": self._included,
            "passes": self._passes,
            "queue": self._pool[: self._remaining].copy(),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`; refuses a state taken with other data, pacing or seed."""
        expected = {
            "state_version": STATE_VERSION,
            "seed": self.seed,
            "rows": len(self._difficulty),
            "difficulty_sha256": self._digest,
        }
        missing = [k for k in (*expected, "pacing", "last_step", "included", "passes", "queue", "rng") if k not in state]
        if missing:
            raise ValidationError("state_dict", f"missing key '{missing[0]}'")
        for key, value in expected.items():
            if state[key] != value:
                raise ValidationError("state_dict", f"'{key}' is {state[key]!r} but this sampler has {value!r}")
        if pacing_from_dict(state["pacing"]) != self.pacing:
            raise ValidationError("state_dict", f"pacing {state['pacing']} differs from this sampler's {self.pacing.to_dict()}")
        queue = np.asarray(state["queue"], dtype=np.int64)
        included = int(state["included"])
        if not 0 <= included <= len(self._order) or not np.isin(queue, self._order[:included]).all():
            raise ValidationError("state_dict", "queue holds rows that were not admitted; the state is corrupt")
        rng = np.random.default_rng()
        rng.bit_generator.state = dict(state["rng"])
        self._rng = rng
        self._last_step = int(state["last_step"])
        self._included = included
        self._passes = int(state["passes"])
        self._pool[: len(queue)] = queue
        self._remaining = len(queue)
