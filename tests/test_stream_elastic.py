"""Elastic determinism (Mosaic Streaming's headline guarantee): every global batch is the same for any
world size and number of DataLoader workers, for every sampler and mixture, and a stream saved at one
world size resumes at another with nothing lost or repeated."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaystore.curriculum import CurriculumSampler, LinearPacing
from replaystore.errors import ValidationError
from replaystore.stream import Prioritized, Proportions, ReplayStream, Sampler, Sequential, Shuffled, Source, Uniform
from replaystore.stream.samplers import Curriculum

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": np.arange(start, start + n, dtype=np.int64)})


def curriculum(n: int) -> Curriculum:
    difficulty = np.random.default_rng(0).random(n)
    return Curriculum(CurriculumSampler(difficulty, LinearPacing(0.2, 6), seed=1))


SAMPLERS: dict[str, Callable[[int], Sampler]] = {
    "sequential": lambda n: Sequential(),
    "shuffled": lambda n: Shuffled(),
    "uniform": lambda n: Uniform(),
    "prioritized": lambda n: Prioritized(alpha=0.7),
    "curriculum": curriculum,
}


def make(kind: str, n: int, batch: int, *, mixture: bool = False, **topology: Any) -> ReplayStream:
    main = Source.from_arrow("main", rows(n), sampler=SAMPLERS[kind](n))
    sized = {} if main.sampler.without_replacement else {"steps_per_epoch": 7}
    if not mixture:
        return ReplayStream(main, batch, seed=11, prefetch=0, **sized, **topology)
    replay = Source.from_arrow("replay", rows(17, start=10_000), sampler=Shuffled())
    return ReplayStream([main, replay], batch, mixing=Proportions([0.7, 0.3]), seed=11, prefetch=0, **sized, **topology)


def worker_batches(stream: ReplayStream, workers: int, epoch: int) -> list[dict[str, Any]]:
    """What a DataLoader with `workers` workers yields: worker outputs interleaved round-robin."""
    stream.set_epoch(epoch)
    copies = [pickle.loads(pickle.dumps(stream)) for _ in range(workers)]
    per_worker = [list(c.iter_worker(w, workers, in_main=False)) for w, c in enumerate(copies)]
    return [p[i] for i in range(max(map(len, per_worker))) for p in per_worker if i < len(p)]


def global_batches(kind: str, n: int, global_batch: int, world: int, workers: int, epoch: int, mixture: bool) -> list[list[int]]:
    """Each global step's ids, ranks in rank order (each rank's rows in its own order)."""
    per_rank = [
        [b["id"].tolist() for b in worker_batches(make(kind, n, global_batch // world, mixture=mixture, rank=r, world_size=world), workers, epoch)]
        for r in range(world)
    ]
    steps = max(map(len, per_rank))
    return [sorted(i for r in per_rank if s < len(r) for i in r[s]) for s in range(steps)]


@FAST
@given(
    kind=st.sampled_from(sorted(SAMPLERS)),
    n=st.integers(1, 120),
    per_rank=st.integers(1, 6),
    world=st.sampled_from([2, 3, 4]),
    workers=st.integers(1, 3),
    epoch=st.integers(0, 2),
    mixture=st.booleans(),
)
def test_every_global_batch_is_the_same_at_any_world_size_and_worker_count(
    kind: str, n: int, per_rank: int, world: int, workers: int, epoch: int, mixture: bool
) -> None:
    g = per_rank * world
    single = global_batches(kind, n, g, 1, 1, epoch, mixture)
    assert global_batches(kind, n, g, world, workers, epoch, mixture) == single


def test_sequential_global_batches_are_storage_order_for_any_world_size() -> None:
    """The issue's example: 1 rank × 14 and 2 ranks × 7 read the same ids 0–13 at step 0."""
    assert global_batches("sequential", 1000, 14, 1, 1, 0, False)[0] == list(range(14))
    assert global_batches("sequential", 1000, 14, 2, 1, 0, False)[0] == list(range(14))


def consume(stream: ReplayStream, steps: int | None = None) -> list[int]:
    out: list[int] = []
    if steps == 0:
        return out
    for taken, batch in enumerate(stream, 1):
        out += batch["id"].tolist()
        if steps is not None and taken == steps:
            break
    return out


@FAST
@given(
    kind=st.sampled_from(sorted(SAMPLERS)),
    n=st.integers(10, 150),
    per_rank=st.integers(1, 5),
    worlds=st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4])),
    stop=st.integers(1, 6),
    mixture=st.booleans(),
)
def test_resume_at_another_world_size_with_the_same_global_batch_continues_the_global_sequence(
    kind: str, n: int, per_rank: int, worlds: tuple[int, int], stop: int, mixture: bool
) -> None:
    before, after = worlds
    g = per_rank * 4  # divisible by every world size tried
    whole = global_batches(kind, n, g, 1, 1, 0, mixture)
    ranks = [make(kind, n, g // before, mixture=mixture, rank=r, world_size=before) for r in range(before)]
    done = min(stop, len(whole) - 1)  # stop inside the epoch (a finished one resumes at the next)
    for stream in ranks:
        consume(stream, done)
    state = ranks[0].state_dict()
    resumed = [make(kind, n, g // after, mixture=mixture, rank=r, world_size=after) for r in range(after)]
    rest = []
    for stream in resumed:
        stream.load_state_dict(state)
        rest.append([b["id"].tolist() for b in stream])
    steps = max(map(len, rest), default=0)
    assert [sorted(i for r in rest if s < len(r) for i in r[s]) for s in range(steps)] == whole[done:]


@FAST
@given(
    kind=st.sampled_from(["sequential", "shuffled"]),
    n=st.integers(1, 200),
    old=st.tuples(st.integers(1, 4), st.integers(1, 9)),
    new=st.tuples(st.integers(1, 4), st.integers(1, 9)),
    stop=st.integers(0, 30),
    epoch=st.integers(0, 2),
)
def test_resume_at_another_global_batch_size_loses_and_repeats_nothing(
    kind: str, n: int, old: tuple[int, int], new: tuple[int, int], stop: int, epoch: int
) -> None:
    """A job restarted on fewer or more machines (another world size, the same per-device batch):
    the rest of the epoch is read once, in the same order, cut into the new global batches."""
    (w0, b0), (w1, b1) = old, new
    single = make(kind, n, b0 * w0)
    single.set_epoch(epoch)
    steps = [b["id"].tolist() for b in single]
    order = [i for batch in steps for i in batch]  # the epoch's sequence, in order
    stop = min(stop, len(steps) - 1)  # stop inside the epoch (a finished one resumes at the next)
    ranks = [make(kind, n, b0, rank=r, world_size=w0) for r in range(w0)]
    seen: list[int] = []
    for stream in ranks:
        stream.set_epoch(epoch)
        seen += consume(stream, stop)
    state = ranks[0].state_dict()
    rest: list[list[list[int]]] = []
    for r in range(w1):
        stream = make(kind, n, b1, rank=r, world_size=w1)
        stream.load_state_dict(state)
        rest.append([b["id"].tolist() for b in stream])
    continued = [i for s in range(max(map(len, rest), default=0)) for r in rest if s < len(r) for i in r[s]]
    assert sorted(seen + continued) == list(range(n))  # nothing lost, nothing repeated
    assert sorted(continued) == sorted(order[len(seen) :])  # the rest of the same sequence
    if w1 == 1:
        assert continued == order[len(seen) :]


def test_a_mixture_refuses_another_global_batch_size_and_names_the_fix() -> None:
    stream = make("shuffled", 50, 4, mixture=True)
    consume(stream, 2)
    with pytest.raises(ValidationError) as err:
        make("shuffled", 50, 6, mixture=True).load_state_dict(stream.state_dict())
    assert err.value.field == "global_batch" and "batch_size × world_size = 4" in str(err.value)


def test_a_duck_typed_sampler_still_works_with_a_deprecation_warning() -> None:
    class Evens:  # the old structural protocol: no Sampler base
        without_replacement = False

        def reset(self, n: int, priorities: np.ndarray | None = None) -> None: ...

        def positions(self, draw: Any) -> tuple[np.ndarray, None]:
            return (np.arange(draw.count) * 2 + draw.offset) % draw.n, None

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: dict[str, Any]) -> None: ...

    with pytest.warns(DeprecationWarning, match="subclass replaystore.stream.Sampler"):
        source = Source.from_arrow("t", rows(10), sampler=Evens())
    batch = next(iter(ReplayStream(source, 3, steps_per_epoch=1, prefetch=0)))
    assert batch["id"].tolist() == [0, 2, 4]
