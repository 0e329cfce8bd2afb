"""Pacing formulas, their validation, and the pacing plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.curriculum.pacing import (
    DiscretePacing,
    LinearPacing,
    RootPacing,
    SqrtPacing,
    pacing_from_dict,
)
from replaystore.errors import ValidationError

c0s = st.floats(min_value=1e-6, max_value=1.0)
totals = st.integers(min_value=1, max_value=100_000)


@pytest.mark.parametrize(
    "pacing, reference",
    [
        (LinearPacing(0.1, 100), lambda t: min(1, t * 0.9 / 100 + 0.1)),
        (SqrtPacing(0.1, 100), lambda t: min(1, math.sqrt(t * (1 - 0.01) / 100 + 0.01))),
        (RootPacing(0.1, 100, 3), lambda t: min(1, (t * (1 - 0.001) / 100 + 0.001) ** (1 / 3))),
    ],
)
def test_root_pacings_match_the_formulas_at_start_end_beyond_and_between(pacing, reference) -> None:
    assert pacing.competence(0) == pytest.approx(0.1)
    assert pacing.competence(100) == pytest.approx(1.0)
    assert pacing.competence(1000) == 1.0
    steps = np.arange(0, 151)
    np.testing.assert_allclose(pacing.competence(steps), [reference(t) for t in steps], rtol=1e-12)


def test_discrete_pacing_holds_each_difficulty_up_to_its_step() -> None:
    pacing = DiscretePacing([0.2, 0.5, 1.0], [10, 20])
    assert pacing.competence(0) == 0.2
    assert pacing.competence(10) == 0.2
    assert pacing.competence(11) == 0.5
    assert pacing.competence(20) == 0.5
    assert pacing.competence(21) == 1.0
    assert pacing.competence(10**9) == 1.0


@settings(max_examples=200, deadline=None)
@given(c0=c0s, total=totals, p=st.floats(min_value=1, max_value=10), steps=st.lists(st.integers(0, 300_000), min_size=2, max_size=50))
def test_root_pacing_is_monotone_and_within_0_1(c0: float, total: int, p: float, steps: list[int]) -> None:
    t = np.sort(np.asarray(steps))
    c = RootPacing(c0, total, p).competence(t)
    assert np.all(np.diff(c) >= -1e-12)
    assert np.all((c > 0) & (c <= 1))
    assert c[t >= total] == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_discrete_pacing_is_monotone(data: st.DataObject) -> None:
    k = data.draw(st.integers(0, 10))
    steps = sorted(data.draw(st.sets(st.integers(0, 1000), min_size=k, max_size=k)))
    diffs = sorted(data.draw(st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=k + 1, max_size=k + 1)))
    c = DiscretePacing(diffs, steps).competence(np.arange(1100))
    assert np.all(np.diff(c) >= 0) and np.all((c > 0) & (c <= 1))


@pytest.mark.parametrize("c0", [0, -0.1, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_c0_outside_0_1_is_refused(c0) -> None:
    with pytest.raises(ValidationError) as err:
        LinearPacing(c0, 10)
    assert err.value.field == "c0" and "(0, 1]" in err.value.rule


@pytest.mark.parametrize("total", [0, -5, 2.5, True, None])
def test_total_steps_must_be_positive_integer(total) -> None:
    with pytest.raises(ValidationError) as err:
        SqrtPacing(0.1, total)
    assert err.value.field == "T"


def test_root_degree_below_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="p: root degree"):
        RootPacing(0.1, 10, 0.5)


@pytest.mark.parametrize(
    "difficulties, steps, field, words",
    [
        ([0.2, 0.5], [10, 20], "difficulties", "one more entry than steps"),
        ([0.2, 0.5, 0.7, 1.0], [10, 20], "difficulties", "one more entry than steps"),
        ([0.2, 1.5], [10], "difficulties", "[0, 1]"),
        ([-0.1, 1.0], [10], "difficulties", "[0, 1]"),
        ([0.6, 0.5], [10], "difficulties", "must not decrease"),
        ([0.2, 0.5, 1.0], [20, 10], "steps", "strictly increase"),
        ([0.2, 1.0], [-1], "steps", "integer ≥ 0"),
        ([0.2, 1.0], [1.5], "steps", "integer ≥ 0"),
    ],
)
def test_bad_discrete_schedules_are_refused(difficulties, steps, field, words) -> None:
    with pytest.raises(ValidationError) as err:
        DiscretePacing(difficulties, steps)
    assert err.value.field == field and words in err.value.rule


def test_negative_steps_are_refused() -> None:
    with pytest.raises(ValidationError, match="step"):
        LinearPacing(0.5, 10).competence(-1)


@pytest.mark.parametrize("pacing", [LinearPacing(0.1, 10), SqrtPacing(0.3, 7), RootPacing(0.2, 50, 3.5), DiscretePacing([0.1, 0.4, 1.0], [3, 9])])
def test_pacing_round_trips_through_its_dict(pacing) -> None:
    assert pacing_from_dict(pacing.to_dict()) == pacing


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"type": "cosine", "c0": 0.1, "T": 10}, "pacing.type"),
        ({"type": ["linear"], "c0": 0.1, "T": 10}, "pacing.type"),
        ({"type": "linear", "c0": 0.1}, "pacing.T"),
        ({"type": "linear", "c0": 0.1, "T": 10, "p": 2}, "pacing.p"),
        ("linear", "pacing"),
    ],
)
def test_bad_pacing_specs_name_the_field(spec, field) -> None:
    with pytest.raises(ValidationError) as err:
        pacing_from_dict(spec)
    assert err.value.field == field


def test_plot_writes_a_png_with_fraction_and_count_panels(tmp_path) -> None:
    import matplotlib.image

    from replaystore.curriculum.plot import plot_pacing

    difficulty = (np.arange(200) + 1) / 200
    with pytest.raises(ValidationError, match=r"folder .*plots does not exist"):
        plot_pacing(SqrtPacing(0.1, 40), tmp_path / "plots" / "sqrt.png", difficulty=difficulty)
    assert not (tmp_path / "plots").exists()
    out = plot_pacing(SqrtPacing(0.1, 40), tmp_path / "sqrt.png", difficulty=difficulty)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two_panels = matplotlib.image.imread(out)
    one_panel = matplotlib.image.imread(plot_pacing(SqrtPacing(0.1, 40), tmp_path / "one.png"))
    assert two_panels.shape[0] > one_panel.shape[0] and two_panels.std() > 0
    constant = matplotlib.image.imread(plot_pacing(DiscretePacing([0.5], []), tmp_path / "constant.png"))
    assert constant.shape == one_panel.shape
    with pytest.raises(ValidationError, match="steps"):
        plot_pacing(SqrtPacing(0.1, 40), tmp_path / "bad.png", steps=0)
