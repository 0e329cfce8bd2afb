"""CurriculumSampler: admits by pacing, covers every admitted row, resumes exactly."""

from __future__ import annotations

import copy
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.curriculum.pacing import (
    DiscretePacing,
    LinearPacing,
    RootPacing,
    SqrtPacing,
)
from replaystore.curriculum.sampler import CurriculumSampler
from replaystore.curriculum.scoring import percentiles
from replaystore.errors import ValidationError


def _difficulty(n: int, seed: int, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, max(n // 4, 2), n) if ties else rng.normal(size=n)
    return percentiles(values)


def _draw(sampler: CurriculumSampler, steps: range, batch_size: int) -> list[np.ndarray]:
    return [sampler.indices(t, batch_size) for t in steps]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 2**32),
    ties=st.booleans(),
    c0=st.floats(0.01, 1.0),
    total=st.integers(1, 60),
    p=st.sampled_from([1.0, 2.0, 3.0]),
    batch=st.integers(1, 64),
)
def test_never_draws_a_row_that_is_not_admitted(n, seed, ties, c0, total, p, batch) -> None:
    d = _difficulty(n, seed, ties)
    pacing = RootPacing(c0, total, p)
    sampler = CurriculumSampler(d, pacing, seed=seed)
    for t in range(total + 5):
        rows = sampler.indices(t, batch)
        admitted = sampler.admitted(t)
        assert len(rows) == batch and np.isin(rows, admitted).all()
        threshold = max(pacing.competence(t), d.min())
        assert np.array_equal(admitted, np.flatnonzero(d <= threshold + 1e-12))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), seed=st.integers(0, 1000), batch=st.integers(1, 50), total=st.integers(1, 30))
def test_every_admitted_row_is_drawn_before_any_row_repeats(n, seed, batch, total) -> None:
    d = _difficulty(n, seed)
    sampler = CurriculumSampler(d, SqrtPacing(0.05, total), seed=seed)
    seen: set[int] = set()
    step = 0
    while True:
        rows = sampler.indices(step, batch)
        fresh = [r for r in rows.tolist() if r not in seen]
        if len(set(rows.tolist())) < len(rows) or len(fresh) < len(rows):  # first repeat: the pass is complete
            seen.update(rows.tolist())
            assert set(sampler.admitted(step).tolist()) <= seen
            break
        seen.update(rows.tolist())
        step += 1
    # run on: after the pacing is full every row is drawn
    drawn = np.concatenate(_draw(sampler, range(step + 1, max(step, total) + n // batch + 2), batch))
    assert set(drawn.tolist()) | seen == set(range(n))


def test_static_pacing_draws_each_row_exactly_once_per_pass() -> None:
    sampler = CurriculumSampler(_difficulty(120, 1), LinearPacing(1.0, 1), seed=4)
    first = np.concatenate(_draw(sampler, range(10), 12))
    second = np.concatenate(_draw(sampler, range(10, 20), 12))
    assert sorted(first.tolist()) == list(range(120)) == sorted(second.tolist())
    assert not np.array_equal(first, second)  # each pass is a new shuffle


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32), cut=st.integers(0, 40), batch=st.integers(1, 40))
def test_resumes_to_the_exact_same_sequence(n, seed, cut, batch) -> None:
    d = _difficulty(n, seed, ties=True)
    pacing = DiscretePacing([0.25, 0.5, 1.0], [5, 15])
    original = CurriculumSampler(d, pacing, seed=seed)
    _draw(original, range(cut), batch)
    state = pickle.loads(pickle.dumps(original.state_dict()))
    expected = _draw(original, range(cut, cut + 30), batch)
    resumed = CurriculumSampler(d, pacing, seed=seed)
    resumed.load_state_dict(state)
    assert resumed.next_step == cut
    got = list(resumed.batches(batch, 30))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_same_seed_same_sequence_other_seed_another() -> None:
    d = _difficulty(500, 3)
    runs = [np.concatenate(_draw(CurriculumSampler(d, LinearPacing(0.2, 20), seed=s), range(25), 32)) for s in (7, 7, 8)]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_rows_without_difficulty_are_never_drawn() -> None:
    d = _difficulty(100, 2)
    d[::3] = np.nan
    sampler = CurriculumSampler(d, LinearPacing(1.0, 1), seed=0)
    drawn = np.concatenate(_draw(sampler, range(20), 16))
    assert len(sampler) == int((~np.isnan(d)).sum())
    assert set(drawn.tolist()) == set(np.flatnonzero(~np.isnan(d)).tolist())


def test_easiest_rows_are_admitted_even_below_c0() -> None:
    d = np.array([0.5, 0.5, 1.0, 0.75])
    sampler = CurriculumSampler(d, LinearPacing(0.01, 10), seed=0)
    assert sampler.admitted(0).tolist() == [0, 1]
    assert set(sampler.indices(0, 8).tolist()) == {0, 1}


def test_admitted_count_is_vectorised_over_steps() -> None:
    sampler = CurriculumSampler((np.arange(100) + 1) / 100, LinearPacing(0.1, 9), seed=0)
    np.testing.assert_array_equal(sampler.admitted_count(np.arange(12)), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100, 100])


def test_bad_calls_are_refused_and_leave_the_sampler_unchanged() -> None:
    sampler = CurriculumSampler(_difficulty(50, 0), LinearPacing(0.5, 10), seed=1)
    sampler.indices(5, 4)
    before = copy.deepcopy(sampler.state_dict())
    for step, batch, field in [(5, 4, "step"), (3, 4, "step"), (-1, 4, "step"), (6, 0, "batch_size"), (6.0, 4, "step")]:
        with pytest.raises(ValidationError) as err:
            sampler.indices(step, batch)
        assert err.value.field == field
    after = sampler.state_dict()
    assert np.array_equal(before.pop("queue"), after.pop("queue")) and before == after


@pytest.mark.parametrize(
    "difficulty, field",
    [
        (np.array([0.5, 1.2]), "difficulty"),
        (np.array([-0.1, 0.5]), "difficulty"),
        (np.array([np.nan, np.nan]), "difficulty"),
        (np.zeros((2, 2)), "difficulty"),
        (np.array([]), "difficulty"),
    ],
)
def test_bad_difficulties_are_refused(difficulty, field) -> None:
    with pytest.raises(ValidationError) as err:
        CurriculumSampler(difficulty, LinearPacing(0.5, 10))
    assert err.value.field == field


def test_state_of_other_data_pacing_or_seed_is_refused() -> None:
    d = _difficulty(60, 0)
    state = CurriculumSampler(d, LinearPacing(0.5, 10), seed=1).state_dict()
    for other, words in [
        (CurriculumSampler(d, LinearPacing(0.5, 11), seed=1), "pacing"),
        (CurriculumSampler(d, LinearPacing(0.5, 10), seed=2), "seed"),
        (CurriculumSampler(_difficulty(60, 1), LinearPacing(0.5, 10), seed=1), "difficulty_sha256"),
    ]:
        with pytest.raises(ValidationError, match=words):
            other.load_state_dict(state)
    with pytest.raises(ValidationError, match="missing key 'rng'"):
        CurriculumSampler(d, LinearPacing(0.5, 10), seed=1).load_state_dict({k: v for k, v in state.items() if k != "rng"})


def test_sampler_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, replaystore.curriculum.sampler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sampler_survives_read_only_unpickling() -> None:
    """Ray hands shipped numpy arrays back read-only; the sampler must still draw after that."""
    import pickle

    from replaystore.curriculum import CurriculumSampler, LinearPacing

    sampler = CurriculumSampler(np.linspace(0, 1, 50), LinearPacing(0.2, 10), seed=3)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(sampler, protocol=5, buffer_callback=buffers.append)
    clone = pickle.loads(data, buffers=[b.raw().toreadonly() for b in buffers])  # as Ray's object store does
    assert [clone.indices(t, 8).tolist() for t in range(12)] == [sampler.indices(t, 8).tolist() for t in range(12)]
