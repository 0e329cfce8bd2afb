"""Invariants under random inputs: herding and k-center equal their brute-force definitions, plans never exceed a budget,
and no sequence of adds ever commits a version over budget or with a gap in a class's ranks."""

from __future__ import annotations

import tempfile

import numpy as np
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.exemplars import Quota, closest_to_centre_order, herding_order, k_center_order
from replaystore.exemplars.plan import plan_keep


def brute_force_distances(features: np.ndarray, picked: list[int]) -> np.ndarray:
    """iCaRL's objective, literally: for every unpicked sample, how far the mean with it lies from the class mean."""
    v = features.astype(np.float64)
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-8)
    mu = v.mean(axis=0)
    return np.array([np.inf if i in picked else np.linalg.norm(mu - v[picked + [i]].mean(axis=0)) for i in range(len(v))])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), d=st.integers(1, 12), k=st.integers(0, 40))
def test_herding_matches_brute_force(seed: int, n: int, d: int, k: int) -> None:
    feats = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) * 3 + 1
    order = herding_order(feats, k).tolist()
    assert len(set(order)) == len(order) == min(k, n)  # never a repeat, safe when k > n
    for step, pick in enumerate(order):
        dist = brute_force_distances(feats, order[:step])
        assert dist[pick] <= dist.min() + 1e-5  # each pick minimises the objective (float32 ties may go either way)
        if np.sum(dist <= dist.min() + 1e-5) == 1:
            assert pick == int(np.argmin(dist))


def test_herding_picks_equal_the_reference_on_a_fixed_draw() -> None:
    feats = np.random.default_rng(7).standard_normal((60, 5))
    picked: list[int] = []
    for _ in range(25):
        picked.append(int(np.argmin(brute_force_distances(feats, picked))))
    assert herding_order(feats, 25).tolist() == picked


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), d=st.integers(1, 12), k=st.integers(0, 40))
def test_closest_to_centre_matches_brute_force(seed: int, n: int, d: int, k: int) -> None:
    feats = np.random.default_rng(seed).standard_normal((n, d))
    v = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    dist = np.linalg.norm(v - v.mean(axis=0), axis=1)
    order = closest_to_centre_order(feats, k)
    assert len(set(order.tolist())) == len(order) == min(k, n)
    np.testing.assert_allclose(dist[order], np.sort(dist)[:k], atol=1e-5)  # the k nearest, nearest first


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), d=st.integers(1, 12), k=st.integers(0, 40))
def test_k_center_matches_brute_force(seed: int, n: int, d: int, k: int) -> None:
    """The first pick is nearest the class mean; each next one is farthest from all picks so far."""
    feats = np.random.default_rng(seed).standard_normal((n, d)) * 3 + 1
    v = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    order = k_center_order(feats, k).tolist()
    assert len(set(order)) == len(order) == min(k, n)
    for step, pick in enumerate(order):
        if step == 0:
            score = -np.linalg.norm(v - v.mean(axis=0), axis=1)
        else:
            score = np.min(np.linalg.norm(v[:, None, :] - v[None, order[:step], :], axis=2), axis=1)
            score[order[:step]] = -np.inf
        assert score[pick] >= score.max() - 1e-5  # float32 ties may go either way


def test_k_center_keeps_the_far_cases_herding_leaves_out() -> None:
    """A tight cluster with two far outliers: k-center's first three picks cover both outliers,
    herding's stay in the cluster (its picks keep the mean, which the outliers barely move)."""
    rng = np.random.default_rng(0)
    cluster = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((40, 3))
    feats = np.vstack([cluster, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert set(k_center_order(feats, 3).tolist()[1:]) == {40, 41}
    assert not {40, 41} & set(herding_order(feats, 3).tolist())


rows_strategy = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    rows=rows_strategy,
    quota_rows=st.one_of(st.none(), st.integers(0, 12)),
    quota_bytes=st.one_of(st.none(), st.integers(0, 200)),
    budget=st.one_of(st.none(), st.integers(0, 600)),
)
def test_plan_keeps_best_ranked_prefixes_inside_every_limit(rows, quota_rows, quota_bytes, budget) -> None:
    classes = np.array([c for c, _ in rows], dtype=np.int64)
    nbytes = np.array([b for _, b in rows], dtype=np.int64)
    ranks = np.zeros(len(rows), dtype=np.int64)
    for c in set(classes.tolist()):
        mine = np.flatnonzero(classes == c)
        ranks[mine] = np.random.default_rng(c).permutation(len(mine)) + 1
    plan = plan_keep(classes, ranks, nbytes, Quota(quota_rows, quota_bytes), budget)
    assert plan.kept_bytes == nbytes[plan.keep].sum() <= (budget if budget is not None else np.inf)
    for c in set(classes.tolist()):
        mine = classes == c
        kept = np.sort(ranks[mine & plan.keep])
        assert kept.tolist() == list(range(1, len(kept) + 1))  # a prefix by rank
        assert quota_rows is None or len(kept) <= quota_rows
        assert quota_bytes is None or nbytes[mine & plan.keep].sum() <= quota_bytes
    if budget is None or plan.requested_bytes <= budget:
        assert not plan.over_budget and plan.kept_bytes == plan.requested_bytes  # nothing evicted when it fits


adds = st.lists(
    st.tuples(st.integers(0, 4), st.integers(1, 15), st.integers(0, 1000)),  # class, candidates, seed
    min_size=1,
    max_size=5,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=adds,
    policy=st.sampled_from([("fixed_total", None), ("fixed_per_class", 4)]),
    selector=st.sampled_from(["herding", "random", "reservoir", "closest_to_centre", "k_center"]),
    slots=st.integers(0, 25),
)
def test_no_add_sequence_ever_commits_a_version_over_budget(steps, policy, selector, slots) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = replaystore.open(root)
        model_params = 10
        budget = model_params * 4 + slots * 9
        buf = store.exemplars("p", budget=budget, model_params=model_params, policy=policy[0], memory_per_class=policy[1], selector=selector)
        for class_id, n, seed in steps:
            rng = np.random.default_rng(seed)
            buf.add(class_id, rng.integers(0, 9, (n, 9), dtype=np.uint8), features=rng.standard_normal((n, 3)), sample_ids=rng.choice(10_000, n, replace=False))
            seen = len({c for c, _, _ in steps[: steps.index((class_id, n, seed)) + 1]})
            counts = buf.budget()["per_class"]
            quota = slots // seen if policy[0] == "fixed_total" else policy[1]
            assert all(count <= quota for count in counts.values())
        for v in store.versions("p"):
            table = store.read("p", version=v.version, columns=["class_id", "rank", "nbytes"])
            assert (pc.sum(table["nbytes"]).as_py() or 0) <= budget - model_params * 4
            for c in set(table["class_id"].to_pylist()):
                ranks = sorted(r for r, k in zip(table["rank"].to_pylist(), table["class_id"].to_pylist()) if k == c)
                assert ranks == list(range(1, len(ranks) + 1))
