"""Exemplar buffers on real Lance tables: policies across tasks, budgets, eviction vs refusal, errors, writers racing."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from sklearn.datasets import load_digits

import replaystore
from replaystore.errors import BudgetExceededError, NotFoundError, ValidationError
from replaystore.exemplars import herding_order, model_nbytes

PIXELS = 64  # an 8×8 uint8 digit


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits images, labels, and an untrained MLP's penultimate features (what iCaRL herds on)."""
    data = load_digits()
    images = data.images.astype(np.uint8)
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    with torch.no_grad():
        feats = body(torch.from_numpy(images.reshape(len(images), -1) / 16.0).float()).numpy()
    return images, data.target, feats


def accounted_bytes_per_version(store: replaystore.Store, name: str) -> list[int]:
    return [int(pc.sum(store.read(name, version=v.version, columns=["nbytes"])["nbytes"]).as_py() or 0) for v in store.versions(name)]


def ranks_are_contiguous(store: replaystore.Store, name: str) -> bool:
    rows = store.read(name, columns=["class_id", "rank"]).to_pandas()
    return all(sorted(g["rank"]) == list(range(1, len(g) + 1)) for _, g in rows.groupby("class_id"))


def test_fixed_total_over_five_tasks_cuts_old_classes_to_their_best_ranked(store, digits) -> None:
    images, labels, feats = digits
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    budget = model_nbytes(mlp) + 200 * PIXELS
    buf = store.exemplars("digits", budget=budget, model=mlp, policy="fixed_total", selector="herding")
    previous: dict[int, np.ndarray] = {}
    for task in range(5):
        for c in (2 * task, 2 * task + 1):
            idx = np.flatnonzero(labels == c)
            buf.add(c, images[idx], features=feats[idx], task_id=task, sample_ids=idx)
        quota = 200 // (2 * (task + 1))  # slots // classes seen: 100, 50, 33, 25, 20
        kept = buf.samples()
        assert np.bincount(kept.labels, minlength=2 * (task + 1)).tolist() == [quota] * (2 * (task + 1))
        for c in range(2 * (task + 1)):
            ids = kept.sample_ids[kept.labels == c]
            if c in previous:
                assert ids.tolist() == previous[c][:quota].tolist()  # a cut keeps the best-ranked prefix
            else:
                idx = np.flatnonzero(labels == c)
                assert ids.tolist() == idx[herding_order(feats[idx], quota)].tolist()  # ranked by herding
            previous[c] = ids
        assert buf.budget()["free_bytes"] >= 0
    assert max(accounted_bytes_per_version(store, "digits")) <= 200 * PIXELS
    assert ranks_are_contiguous(store, "digits")
    report = buf.budget()
    assert (report["model_bytes"], report["exemplar_bytes"], report["model_exemplar_equivalent"]) == (9640, 200 * PIXELS, 150)
    assert report["per_class"] == {c: 20 for c in range(10)}


def test_each_add_with_cuts_is_one_version(store) -> None:
    buf = store.exemplars("one", budget=10 * 16, selector="random")
    v0 = store.dataset("one").version
    first = buf.add(0, np.zeros((10, 4, 4), np.uint8))
    second = buf.add(1, np.ones((10, 4, 4), np.uint8))  # cuts class 0 to 5 and adds 5 of class 1
    assert (first.version, second.version) == (v0 + 1, v0 + 2)
    assert (second.added, second.cut, second.bytes_freed, second.bytes_added) == (5, {0: 5}, 80, 80)
    assert [v.rows for v in store.versions("one")][-2:] == [10, 10]


def test_fixed_per_class_grows_then_evicts_lowest_ranked_evenly(store) -> None:
    buf = store.exemplars("m5", budget=15 * 16, policy="fixed_per_class", memory_per_class=5, selector="random")
    for c in range(3):
        buf.add(c, np.full((8, 4, 4), c, np.uint8))
    assert buf.budget()["per_class"] == {0: 5, 1: 5, 2: 5} and buf.budget()["free_bytes"] == 0
    ranks_before = {c: buf.samples(classes=[c]).sample_ids for c in range(3)}
    change = buf.add(3, np.full((8, 4, 4), 3, np.uint8))
    # 20 rows wanted, 15 fit: ranks 1-3 of every class, then rank 4 of classes 0, 1, 2
    assert buf.budget()["per_class"] == {0: 4, 1: 4, 2: 4, 3: 3}
    assert change.cut == {0: 1, 1: 1, 2: 1} and change.added == 3 and change.bytes_freed == 48
    for c in range(3):
        assert buf.samples(classes=[c]).sample_ids.tolist() == ranks_before[c][:4].tolist()
    assert max(accounted_bytes_per_version(store, "m5")) <= 15 * 16


def test_fixed_per_class_without_budget_keeps_m_each(store) -> None:
    buf = store.exemplars("free", policy="fixed_per_class", memory_per_class=3, selector="reservoir")
    for c in range(5):
        buf.add(c, np.zeros((2 + c, 2), np.float32))
    assert buf.budget()["per_class"] == {0: 2, 1: 3, 2: 3, 3: 3, 4: 3}  # class 0 had fewer than m: kept all
    assert buf.budget()["total_bytes"] is None and buf.budget()["free_bytes"] is None


def test_refuse_states_budget_use_and_request_and_writes_nothing(store) -> None:
    buf = store.exemplars("strict", budget=15 * 16, policy="fixed_per_class", memory_per_class=5, selector="random", on_over_budget="refuse")
    for c in range(3):
        buf.add(c, np.zeros((5, 4, 4), np.uint8))
    before = store.dataset("strict").version
    with pytest.raises(BudgetExceededError) as err:
        buf.add(3, np.zeros((5, 4, 4), np.uint8))
    message = str(err.value)
    assert "budget 240 B" in message and "holds 240 B" in message and "needs 320 B" in message and "80 B over" in message
    assert store.dataset("strict").version == before and buf.budget()["rows"] == 15


def test_model_growth_cuts_to_fit_and_refusal_leaves_it(store) -> None:
    buf = store.exemplars("grow", budget=1_000 + 40 * 16, model_params=250, selector="random")
    buf.add(0, np.zeros((30, 4, 4), np.uint8))
    buf.add(1, np.zeros((30, 4, 4), np.uint8))
    change = buf.configure(model_params=250 + 40)  # 160 more model bytes = 10 fewer exemplars, 5 per class
    assert change.cut == {0: 5, 1: 5} and change.bytes_freed == 160
    assert buf.budget()["model_bytes"] == 1_160 and buf.budget()["free_bytes"] == 0
    strict = store.exemplars("grow").configure(on_over_budget="refuse")
    assert strict.rows_cut == 0
    version = store.dataset("grow").version
    with pytest.raises(BudgetExceededError):
        buf.configure(model_params=400)
    assert store.dataset("grow").version == version and store.exemplars("grow").settings.model_params == 290


def test_a_restore_brings_back_the_rows_with_the_settings_they_were_kept_under(store) -> None:
    buf = store.exemplars("rb", budget=20 * 16, selector="random")
    v = buf.add(0, np.zeros((20, 4, 4), np.uint8)).version
    buf.add(1, np.zeros((20, 4, 4), np.uint8))
    buf.configure(budget=10 * 16)
    store.restore("rb", v)  # class 0 back at 20 rows, as it was kept when the buffer had seen one class
    assert buf.budget()["per_class"] == {0: 20} and buf.settings.classes == (0,) and buf.settings.budget_bytes == 320
    assert buf.rebalance().rows_cut == 0


def test_rebalance_cuts_rows_written_around_the_buffer_and_returns_what_it_cut(store) -> None:
    buf = store.exemplars("rb", budget=20 * 16, selector="random")
    buf.add(0, np.zeros((20, 4, 4), np.uint8))
    buf.add(1, np.zeros((20, 4, 4), np.uint8))
    extra = store.read("rb", filter="class_id = 0").to_pydict()
    extra.update(sample_id=[s + 100 for s in extra["sample_id"]], rank=[r + 10 for r in extra["rank"]])
    store.append("rb", extra)  # a plain append bypasses the budget
    change = buf.rebalance()
    assert change.cut == {0: 10} and change.bytes_freed == 160 and buf.budget()["per_class"] == {0: 10, 1: 10}
    assert buf.rebalance().rows_cut == 0


def test_samples_read_back_as_arrays_and_tensors(store, digits) -> None:
    images, labels, feats = digits
    buf = store.exemplars("rt", budget=50 * PIXELS, selector="closest_to_centre")
    idx = np.flatnonzero(labels == 7)
    buf.add(7, torch.from_numpy(images[idx]), features=feats[idx], sample_ids=idx, task_id=3)
    kept = buf.samples()
    assert kept.data.shape == (50, 8, 8) and kept.data.dtype == np.uint8
    assert (kept.data == images[kept.sample_ids]).all() and (kept.labels == 7).all() and (kept.task_ids == 3).all()
    assert kept.ranks.tolist() == list(range(1, 51))
    np.testing.assert_allclose(kept.features, feats[kept.sample_ids], rtol=1e-6)
    x, y = kept.torch()
    assert x.dtype == torch.uint8 and y.tolist() == [7] * 50
    old = buf.add(8, images[labels == 8][:60], features=feats[labels == 8][:60]).version - 1
    assert len(buf.samples(version=old)) == 50 and len(buf.samples()) == 50


def test_token_samples_are_counted_at_four_bytes_a_token(store) -> None:
    buf = store.exemplars("text", budget=400, selector="reservoir", seed=3)
    seqs = [list(range(n)) for n in (3, 10, 7, 25, 1, 12)]
    buf.add(0, tokens=seqs, sample_ids=np.arange(6))
    buf.add(1, tokens=[[5, 6]] * 4, sample_ids=np.arange(10, 14))
    report = buf.budget()
    assert report["exemplar_bytes"] <= 400 and report["per_class"][1] == 4
    kept = buf.samples(classes=[0])
    assert sum(4 * len(t) for t in kept.tokens) == report["exemplar_bytes"] - 4 * 2 * 4
    assert all(t.tolist() == seqs[i] for t, i in zip(kept.tokens, kept.sample_ids))


def test_reservoir_keeps_the_same_sample_however_the_stream_is_batched(store) -> None:
    ids = np.arange(500)
    whole = store.exemplars("r1", budget=32 * 4, selector="reservoir", seed=11)
    whole.add(0, np.zeros((500, 4), np.uint8), sample_ids=ids)
    batched = store.exemplars("r2", budget=32 * 4, selector="reservoir", seed=11)
    for chunk in np.array_split(ids, 7):
        batched.add(0, np.zeros((len(chunk), 4), np.uint8), sample_ids=chunk)
    assert whole.samples().sample_ids.tolist() == batched.samples().sample_ids.tolist()
    other = store.exemplars("r3", budget=32 * 4, selector="reservoir", seed=12)
    other.add(0, np.zeros((500, 4), np.uint8), sample_ids=ids)
    assert set(other.samples().sample_ids) != set(whole.samples().sample_ids)


def test_offering_kept_classes_again_reranks_them_together(store, digits) -> None:
    images, labels, feats = digits
    idx = np.flatnonzero(labels == 4)
    buf = store.exemplars("again", budget=10 * PIXELS, selector="herding")
    buf.add(4, images[idx[:80]], features=feats[idx[:80]], sample_ids=idx[:80])
    buf.add(4, images[idx[80:]], features=feats[idx[80:]], sample_ids=idx[80:])
    pool = np.r_[buf.samples(version=store.dataset("again").version - 1).sample_ids, idx[80:]]
    expect = pool[herding_order(feats[pool], 10)]
    assert buf.samples().sample_ids.tolist() == expect.tolist()


def _bad(store: replaystore.Store) -> list[tuple[object, type[Exception], str]]:
    buf = store.exemplars("bad", budget=1_000, selector="herding")
    x, f = np.zeros((4, 8, 8), np.uint8), np.ones((4, 3), np.float32)
    buf.add(0, x, features=f)
    return [
        (lambda: store.exemplars("nope"), NotFoundError, "unknown exemplar buffer 'nope'"),
        (lambda: store.exemplars("neg", budget=-5), ValidationError, "budget: must be a whole number ≥ 0, got -5"),
        (lambda: store.exemplars("tiny", budget=100, model_params=100), ValidationError, "budget: budget 100 B is smaller than the model's 400 B"),
        (lambda: store.exemplars("pol", budget=10, policy="lru"), ValidationError, "policy: must be one of"),
        (lambda: store.exemplars("sel", budget=10, selector="best"), ValidationError, "selector: must be one of"),
        (lambda: store.exemplars("m", budget=10, policy="fixed_per_class"), ValidationError, "memory_per_class"),
        (lambda: store.exemplars("over", budget=10, on_over_budget="ignore"), ValidationError, "on_over_budget"),
        (lambda: store.exemplars("../x", budget=10), ValidationError, "table name"),
        (lambda: store.exemplars("typo", budgte=10), ValidationError, "budgte: unknown exemplar buffer setting"),
        (lambda: store.exemplars("dt", budget=10, sample_dtype="pixels"), ValidationError, "sample_dtype: must be a numpy dtype"),
        (lambda: store.exemplars("bad", budget=2_000), ValidationError, "budget_bytes: buffer 'bad' exists with budget_bytes=1000"),
        (lambda: buf.add(1, np.zeros((4, 8, 9), np.uint8), features=f), ValidationError, "samples: buffer 'bad' holds samples of shape (8, 8)"),
        (lambda: buf.add(1, np.zeros((4, 8, 8), np.float32), features=f), ValidationError, "dtype float32"),
        (lambda: buf.add(1, tokens=[[1, 2]] * 4, features=f), ValidationError, "holds raw samples"),
        (lambda: buf.add(1, x), ValidationError, "features: selector 'herding' ranks by features"),
        (lambda: buf.add(1, x, features=f[:3]), ValidationError, "features: must have shape (N, D) with N = 4"),
        (lambda: buf.add(1, x, features=np.full((4, 3), np.nan)), ValidationError, "features: must be finite"),
        (lambda: buf.add(1, x, features=f, sample_ids=[1, 1, 2, 3]), ValidationError, "sample_ids: must be unique"),
        (lambda: buf.add(1, x, features=f, task_id=-1), ValidationError, "task_id: must be a whole number ≥ 0"),
        (lambda: buf.add(1.5, x, features=f), ValidationError, "class_id: must be a whole number"),
        (lambda: buf.add(1, np.array(["a"] * 4), features=f), ValidationError, "samples: must hold numbers"),
        (lambda: buf.add(1, x, x, tokens=[[1]]), ValidationError, "pass either samples"),
        (lambda: buf.configure(policy="fixed_per_class", memory_per_class=-1), ValidationError, "memory_per_class"),
    ]


def test_bad_input_names_the_field_and_changes_nothing(store) -> None:
    cases = _bad(store)
    before = {t: store.dataset(t).version for t in store.table_names()}
    for call, error, text in cases:
        with pytest.raises(error) as err:
            call()  # type: ignore[operator]
        assert text in str(err.value), (text, str(err.value))
    assert {t: store.dataset(t).version for t in store.table_names()} == before
    assert store.exemplars("bad").budget()["rows"] == 4


def _writer(uri: str, classes: list[int], start: object) -> None:
    buf = replaystore.open(uri).exemplars("shared")
    start.wait()  # type: ignore[attr-defined]  # both write at once (without the lock, versions go over budget)
    rng = np.random.default_rng(classes[0])
    for c in classes:
        buf.add(c, rng.integers(0, 255, (30, 4, 4), dtype=np.uint8), sample_ids=np.arange(30) + 1_000 * c)


@pytest.mark.slow  # two spawned interpreters import torch and Lance: ~30 s on 2 shared cores
def test_two_writers_never_leave_a_version_over_budget(store) -> None:
    store.exemplars("shared", budget=60 * 16, selector="random")
    ctx = mp.get_context("spawn")  # Lance is not fork-safe
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(store.uri, list(range(first, 12, 2)), start)) for first in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    assert max(accounted_bytes_per_version(store, "shared")) <= 60 * 16
    assert store.exemplars("shared").budget()["per_class"] == {c: 60 // 12 for c in range(12)}
    assert ranks_are_contiguous(store, "shared")
