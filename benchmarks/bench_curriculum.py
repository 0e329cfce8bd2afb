"""Curriculum: exact percentiles and per-step sampling over 1M rows (scale 1.0), ours vs the usual code.

The issue names no size; 1M rows matches the store's other figures. Two cases:

- percentiles of 1M float difficulties: `replaystore.curriculum.percentiles` (sort + searchsorted)
  vs `scipy.stats.rankdata(method="max") / n`, the same definition; results must be identical.
- one training step's batch of 256 under a growing sqrt pacing (c0 = 0.01, T = 2000): our
  `CurriculumSampler.indices` (without replacement, every admitted row before any repeat,
  resumable) vs Platanios et al.'s competence sampler (data sorted by difficulty once, then a
  uniform draw with replacement from the admitted prefix each step: the cheapest correct
  admission, with no coverage guarantee).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Result, cli, timer

FULL_ROWS = 1_000_000
BATCH = 256
STEPS = 2000


def _percentiles(values: np.ndarray) -> list[Result]:
    from scipy.stats import rankdata

    from replaystore.curriculum import percentiles

    with timer() as ours_s:
        ours = percentiles(values)
    with timer() as peer_s:
        peer = rankdata(values, method="max") / len(values)
    assert np.array_equal(ours, peer)
    return [
        Result(
            "curriculum",
            f"percentiles of {len(values):,} values",
            "seconds",
            ours_s(),
            peer_s(),
            "scipy rankdata(max)/n",
            higher_is_better=False,
            notes="identical results",
        )
    ]


def _sampling(values: np.ndarray) -> list[Result]:
    from replaystore.curriculum import CurriculumSampler, SqrtPacing, percentiles

    pacing = SqrtPacing(0.01, STEPS)
    difficulty = percentiles(values)
    steps = np.arange(STEPS)
    with timer() as ours_s:  # both sides include their one-time sort by difficulty
        sampler = CurriculumSampler(difficulty, pacing, seed=0)
        for t in steps:
            sampler.indices(int(t), BATCH)
    rng = np.random.default_rng(0)
    with timer() as peer_s:
        order = np.argsort(difficulty, kind="stable")
        for t in steps:
            admitted = max(int(pacing.competence(int(t)) * len(order)), 1)
            order[rng.integers(0, admitted, BATCH)]
    return [
        Result(
            "curriculum",
            f"batch of {BATCH} per step, {len(values):,} rows, sqrt pacing",
            "ms per step",
            ours_s() / STEPS * 1e3,
            peer_s() / STEPS * 1e3,
            "Platanios competence sampler (with replacement)",
            higher_is_better=False,
            notes="ours draws without replacement and resumes exactly; the peer does neither",
        )
    ]


def run(scale: float = 1.0) -> list[Result]:
    values = np.random.default_rng(0).lognormal(size=max(int(FULL_ROWS * scale), 1000))
    return _percentiles(values) + _sampling(values)


if __name__ == "__main__":
    cli(run)
