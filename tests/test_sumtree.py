"""The sum tree behind prioritized draws: its search is `searchsorted(cumsum)`, its totals and minima
stay exact under random batched updates, and it is a pure function of its leaves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.errors import ValidationError
from replaystore.stream.sumtree import SumTree, compiled_available

FAST = settings(max_examples=60, deadline=None)
# Both kernels: numpy level-by-level, and numba loops (the `fast` extra, in `dev`).
KERNELS = pytest.mark.parametrize(
    "compiled", [False, pytest.param(True, marks=pytest.mark.skipif(not compiled_available(), reason="numba (the fast extra) is not installed"))]
)
# Small integers as float64: every partial sum is exact, so "equal" means bit-for-bit equal.
weights_st = st.lists(st.integers(0, 50), min_size=1, max_size=300).filter(any).map(lambda w: np.array(w, dtype=np.float64))


def positive_min(w: np.ndarray) -> float:
    return float(w[w > 0].min()) if (w > 0).any() else np.inf


@KERNELS
@FAST
@given(w=weights_st, fractions=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=64))
def test_find_equals_searchsorted_of_the_cumulative_sum(compiled: bool, w: np.ndarray, fractions: list[float]) -> None:
    tree = SumTree(w, compiled=compiled)
    cdf = np.cumsum(w)
    targets = np.array(fractions) * cdf[-1]
    targets = np.r_[targets, np.floor(targets), cdf[:-1][cdf[:-1] < cdf[-1]]]  # prefix-sum boundaries too
    np.testing.assert_array_equal(tree.find(targets), np.searchsorted(cdf, targets, side="right"))
    assert (w[tree.find(targets)] > 0).all()  # a zero weight is never drawn


@KERNELS
@FAST
@given(
    w=weights_st,
    updates=st.lists(st.tuples(st.lists(st.integers(0, 10_000), min_size=1, max_size=20), st.lists(st.integers(0, 50), min_size=20, max_size=20)), max_size=8),
)  # fmt: skip
def test_totals_and_minima_stay_exact_under_random_updates(compiled: bool, w: np.ndarray, updates: list[tuple[list[int], list[int]]]) -> None:
    tree, mirror = SumTree(w, compiled=compiled), w.copy()
    for raw_positions, raw_values in updates:
        positions = np.array(raw_positions) % len(w)  # repeats included: the last value wins
        values = np.array(raw_values[: len(positions)], dtype=np.float64)
        tree.update(positions, values)
        mirror[positions] = values
        assert tree.total == mirror.sum()
        assert tree.min == positive_min(mirror)
        np.testing.assert_array_equal(tree.weights(), mirror)
        if mirror.sum() > 0:
            u = np.linspace(0, mirror.sum(), 17, endpoint=False)
            np.testing.assert_array_equal(tree.find(u), np.searchsorted(np.cumsum(mirror), u, side="right"))
    rebuilt = SumTree(mirror, compiled=not compiled)  # what a resumed run builds, with either kernel
    np.testing.assert_array_equal(rebuilt._sum, tree._sum)
    np.testing.assert_array_equal(rebuilt._min, tree._min)


@KERNELS
def test_rounding_never_lands_on_an_empty_leaf(compiled: bool) -> None:
    w = np.array([0.1, 0.2, 0.3, 0.0, 0.0])  # a total that is not exact in binary
    tree = SumTree(w, compiled=compiled)
    found = tree.find(np.array([tree.total, np.nextafter(tree.total, 0), tree.total * 2]))
    assert (w[found] > 0).all()


@pytest.mark.parametrize("weights", [[], [1.0, -1.0], [np.nan], [np.inf]])
def test_bad_weights_are_refused_by_name(weights: list[float]) -> None:
    with pytest.raises(ValidationError) as err:
        SumTree(np.array(weights))
    assert err.value.field == "weights"


@pytest.mark.skipif(not compiled_available(), reason="numba (the fast extra) is not installed")
@FAST
@given(
    w=st.lists(st.floats(0, 1e6, allow_subnormal=False), min_size=1, max_size=500).filter(any),
    batches=st.lists(st.lists(st.tuples(st.integers(0, 10_000), st.floats(0, 1e6, allow_subnormal=False)), min_size=1, max_size=40), max_size=6),
    fractions=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=64),
)  # fmt: skip
def test_both_kernels_give_the_same_bits_for_any_real_weights(w: list[float], batches: list[list[tuple[int, float]]], fractions: list[float]) -> None:
    """Real (inexact) priorities: a run that switches kernels, e.g. a resume on a machine without
    numba, draws exactly what the uninterrupted run draws."""
    numpy_tree, numba_tree = SumTree(np.array(w), compiled=False), SumTree(np.array(w), compiled=True)
    for batch in batches:
        positions = np.array([p % len(w) for p, _ in batch])
        values = np.array([v for _, v in batch])
        numpy_tree.update(positions, values)
        numba_tree.update(positions, values)
        np.testing.assert_array_equal(numba_tree._sum, numpy_tree._sum)
        np.testing.assert_array_equal(numba_tree._min, numpy_tree._min)
        if numpy_tree.total > 0:
            targets = np.array(fractions) * numpy_tree.total
            np.testing.assert_array_equal(numba_tree.find(targets), numpy_tree.find(targets))
