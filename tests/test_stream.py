"""The stream: exactly-once sharding, mixing, resumption, snapshot isolation, sampling laws."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

import replaystore
from replaystore.errors import ValidationError
from replaystore.stream import (
    ExactK,
    Prioritized,
    Proportions,
    ReplayStream,
    Sequential,
    Shuffled,
    Source,
    Uniform,
)
from replaystore.stream.order import rng
from replaystore.stream.plan import draw, forward_runs
from replaystore.stream.samplers import Curriculum, Draw

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def rows(n: int, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "x": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 3).astype(np.float32)), 3)})


def ids_of(batches: list[dict[str, Any]]) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def shard_batches(stream: ReplayStream, workers: int) -> list[dict[str, Any]]:
    """What a DataLoader with `workers` workers yields: worker outputs interleaved round-robin."""
    stream.set_epoch(stream.epoch)
    copies = [pickle.loads(pickle.dumps(stream)) for _ in range(workers)]  # each worker gets its own copy
    per_worker = [list(copy.iter_worker(w, workers, in_main=False)) for w, copy in enumerate(copies)]
    out = []
    for i in range(max(len(p) for p in per_worker)):
        out.extend(p[i] for p in per_worker if i < len(p))
    return out


@FAST
@given(
    n=st.integers(1, 300),
    world=st.integers(1, 4),
    workers=st.integers(1, 3),
    batch=st.integers(1, 40),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_every_row_exactly_once_per_epoch_across_ranks_and_workers(n: int, world: int, workers: int, batch: int, shuffle: bool, epoch: int) -> None:
    table = rows(n)
    seen: list[int] = []
    for rank in range(world):
        sampler = Shuffled() if shuffle else Sequential()
        stream = ReplayStream(Source.from_arrow("t", table, sampler=sampler), batch, rank=rank, world_size=world, seed=7, prefetch=0)
        stream.set_epoch(epoch)
        batches = shard_batches(stream, workers)
        assert all(len(b["id"]) <= batch for b in batches)
        seen += ids_of(batches)
    assert sorted(seen) == list(range(n))


@pytest.fixture(scope="module")
def lance_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    import lance

    uri = str(tmp_path_factory.mktemp("lance") / "t.lance")
    lance.write_dataset(rows(3000), uri, max_rows_per_file=700)  # several fragments
    return uri


@FAST
@given(world=st.integers(1, 3), workers=st.integers(1, 3), batch=st.integers(1, 300))
def test_lance_reads_give_every_rank_whole_aligned_rows_in_storage_order(lance_uri: str, world: int, workers: int, batch: int) -> None:
    seen = []
    for rank in range(world):
        stream = ReplayStream(Source.from_lance("t", lance_uri), batch, rank=rank, world_size=world, prefetch=0)
        batches = shard_batches(stream, workers)
        for b in batches:
            assert torch.equal(b["x"][:, 0].long(), b["id"])  # rows arrive whole and aligned
            assert b["id"].tolist() == list(range(int(b["id"][0]), int(b["id"][0]) + len(b["id"])))  # one run per batch
        seen += ids_of(batches)
    assert sorted(seen) == list(range(3000))


@FAST
@given(n=st.integers(1, 200), batch=st.integers(1, 16), workers=st.integers(1, 3), epoch=st.integers(0, 5))
def test_order_is_a_pure_function_of_seed_and_epoch_whatever_the_world_size(n: int, batch: int, workers: int, epoch: int) -> None:
    def global_steps(world: int) -> list[list[int]]:
        per_rank = []
        for rank in range(world):
            stream = ReplayStream(Source.from_arrow("t", rows(n), sampler=Shuffled()), batch, rank=rank, world_size=world, seed=3, prefetch=0)
            stream.set_epoch(epoch)
            per_rank.append([b["id"].tolist() for b in shard_batches(stream, workers)])
        steps = max(len(r) for r in per_rank)
        return [sorted(i for r in per_rank if s < len(r) for i in r[s]) for s in range(steps)]

    def single(e: int) -> list[list[int]]:
        one = ReplayStream(Source.from_arrow("t", rows(n), sampler=Shuffled()), 2 * batch, seed=3, prefetch=0)
        one.set_epoch(e)
        return [b["id"].tolist() for b in one]

    assert global_steps(2) == [sorted(s) for s in single(epoch)]
    if n >= 20:  # another epoch is another permutation (equal with probability 1/20!)
        assert single(epoch + 1) != single(epoch)


@FAST
@given(world=st.integers(1, 4), batch=st.integers(2, 24), data=st.data())
def test_exactly_k_replay_rows_in_every_global_batch(world: int, batch: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, world * batch - 1))
    task, replay = rows(97), rows(13, start=1000)
    per_rank = []
    for rank in range(world):
        stream = ReplayStream(
            [Source.from_arrow("task", task, sampler=Shuffled()), Source.from_arrow("replay", replay, sampler=Uniform())],
            batch, mixing=ExactK(k), rank=rank, world_size=world, prefetch=0,
        )  # fmt: skip
        per_rank.append([int((b["_source"] == 1).sum()) for b in stream])
    for step in range(len(per_rank[0])):
        assert sum(r[step] for r in per_rank if step < len(r)) == k
    assert max(max(r) for r in per_rank) - min(min(r) for r in per_rank) <= 1  # balanced across ranks


def test_proportions_hold_exactly_over_time_and_can_change_with_the_step() -> None:
    task, replay = rows(800), rows(50, start=1000)
    fixed = ReplayStream([Source.from_arrow("task", task), Source.from_arrow("replay", replay, sampler=Uniform())], 10, mixing=Proportions([0.8, 0.2]))
    counts = np.array([[int((b["_source"] == i).sum()) for i in (0, 1)] for b in fixed])
    assert counts.sum(0).tolist() == [800, 200]
    assert set(counts[:, 1]) == {2}
    ramp = ReplayStream(
        [Source.from_arrow("task", task), Source.from_arrow("replay", replay, sampler=Uniform())],
        10, mixing=Proportions(lambda step: [1.0, step / 50]),
    )  # fmt: skip
    replay_rows = [int((b["_source"] == 1).sum()) for b in ramp]
    assert replay_rows[0] == 0 and replay_rows[-1] >= 4
    assert all(a <= b + 1 for a, b in zip(replay_rows, replay_rows[1:]))  # grows with the step


def mixture(prefetch: int, seed: int = 5) -> ReplayStream:
    return ReplayStream(
        [
            Source.from_arrow("task", rows(300), sampler=Shuffled()),
            Source.from_arrow("replay", rows(40, start=1000), sampler=Prioritized(alpha=1.0)),
            Source.from_arrow("general", rows(25, start=5000), sampler=Uniform()),
        ],
        batch_size=12, mixing=Proportions([0.6, 0.3, 0.1]), seed=seed, prefetch=prefetch,
    )  # fmt: skip


def train(stream: ReplayStream, steps: int | None = None) -> list[list[int]]:
    """Consume batches, feeding back losses that depend on the rows (so priorities really change)."""
    out = []
    for batch in stream:
        out.append(batch["id"].tolist())
        stream.update_priorities(batch, (batch["id"] % 7).float())
        if steps is not None and len(out) == steps:
            break
    return out


@settings(FAST, max_examples=12)
@given(stop=st.integers(1, 24), prefetch=st.sampled_from([0, 1, 3]))
def test_resume_equals_the_uninterrupted_run_for_a_prioritized_mixture(stop: int, prefetch: int) -> None:
    whole = mixture(prefetch)
    expected = train(whole) + train(whole)  # two epochs
    first = mixture(prefetch)
    head = train(first, stop)
    state = first.state_dict()
    resumed = mixture(prefetch)
    resumed.load_state_dict(state)
    assert head + train(resumed) + train(resumed) == expected


def test_resume_rejects_a_different_stream() -> None:
    state = mixture(0).state_dict()
    with pytest.raises(ValidationError) as err:
        mixture(0, seed=6).load_state_dict(state)
    assert err.value.field == "seed"


def test_prioritized_frequencies_match_the_target_distribution() -> None:
    priorities = np.array([0.5, 1, 2, 4, 8, 0.25, 3, 6])
    sampler = Prioritized(alpha=0.7, beta=0.5)
    stream = ReplayStream(Source.from_arrow("p", rows(8), sampler=sampler), 500, steps_per_epoch=40, prefetch=0)
    stream.set_epoch(0)
    sampler.reset(8, priorities)
    stream._sampler_epoch = 0  # keep the priorities just set for this epoch
    batches = list(stream)
    drawn = np.bincount(np.concatenate([b["_position"].numpy() for b in batches]), minlength=8)
    target = priorities**0.7 / (priorities**0.7).sum()
    assert chisquare(drawn, target * drawn.sum()).pvalue > 1e-3
    first = batches[0]
    expected = (target[first["_position"].numpy()] / target.min()) ** -0.5  # beta at step 0
    np.testing.assert_allclose(first["_weight"].numpy(), expected, rtol=1e-5)
    assert float(batches[-1]["_weight"].min()) < float(first["_weight"].min())  # beta anneals upward


def test_a_pickled_prioritized_sampler_draws_what_the_original_draws() -> None:
    """Pickles leave the sum tree behind; the rebuilt one (base + replayed log) is the same tree."""
    sampler = Prioritized(alpha=0.7)
    sampler.reset(1000, np.random.default_rng(0).random(1000))

    def step(s: Prioritized, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, weights = s.positions(Draw(1000, 0, 0, 0, k, k, 0, 64, 0, 64))
        s.update_priority(rows, np.random.default_rng(k).random(64), at_step=k + 2)  # pending across the pickle
        s.consumed(k)
        return rows, weights

    for k in range(5):
        step(sampler, k)
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy._tree is None and len(pickle.dumps(sampler)) < sampler.base.nbytes * 2
    for k in range(5, 10):
        (a, wa), (b, wb) = step(sampler, k), step(copy, k)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(wa, wb)


def test_priority_updates_take_effect_after_the_prefetched_batches() -> None:
    stream = ReplayStream(Source.from_arrow("p", rows(50), sampler=Prioritized(alpha=1.0)), 20, steps_per_epoch=12, prefetch=2)
    drawn = []
    for step, batch in enumerate(stream):
        drawn.append(batch["_position"].numpy())
        if step == 0:  # every row gets a new priority: row 0 a large one, the rest eps
            everything = {"_source": torch.zeros(50, dtype=torch.int16), "_position": torch.arange(50)}
            stream.update_priorities(everything, np.r_[1000.0, np.zeros(49)])
    lag = stream.priority_lag
    assert not (np.concatenate(drawn[1 : 1 + lag - 1]) == 0).all()  # still the old priorities
    assert (np.concatenate(drawn[1 + lag - 1 :]) == 0).all()  # only row 0 has mass now


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=6))
@example([0])
@example([2**32 - 1, 0, 3])  # the largest word an array holds
@example([7, 2**32 - 1, 2**32])  # one past it: the list, as numpy splits it
def test_a_step_generator_is_numpys_generator_seeded_with_the_same_key(key: list[int]) -> None:
    """Stream orders stay what they were: the same bits as numpy's SeedSequence of the key's ints,
    small words and words past 2**32 alike."""
    reference = np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
    assert np.array_equal(rng(*key).random(8), reference.random(8))


def test_a_pending_priority_update_keeps_its_rows_when_the_batch_is_changed_afterwards() -> None:
    stream = ReplayStream(Source.from_arrow("p", rows(50), sampler=Prioritized(alpha=1.0)), 20, steps_per_epoch=12, prefetch=0)
    drawn = []
    for step, batch in enumerate(stream):
        drawn.append(batch["_position"].numpy().copy())
        if step == 0:  # row 0 gets all the mass, then the training loop reuses the batch's tensors
            everything = {"_source": torch.zeros(50, dtype=torch.int16), "_position": torch.arange(50)}
            stream.update_priorities(everything, np.r_[1000.0, np.zeros(49)])
            everything["_position"].fill_(7)
    assert (np.concatenate(drawn[1:]) == 0).all()


def test_store_source_pins_each_epoch_and_ignores_concurrent_appends(store: replaystore.Store) -> None:
    import lance

    uri = store.table_uri("task")
    lance.write_dataset(rows(200), uri)
    stream = ReplayStream(Source.from_lance("task", uri, sampler=Shuffled()), 16, prefetch=1)
    it = iter(stream)
    head = [next(it) for _ in range(3)]
    writer = f"import lance, numpy as np, pyarrow as pa; lance.write_dataset(pa.table({{'id': np.arange(200, 260), 'x': pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(180, np.float32)), 3)}}), {uri!r}, mode='append')"
    subprocess.run([sys.executable, "-c", writer], check=True, cwd=ROOT, timeout=120)
    assert lance.dataset(uri).count_rows() == 260
    first_epoch = ids_of(head + list(it))
    assert sorted(first_epoch) == list(range(200))
    assert sorted(ids_of(list(stream))) == list(range(260))  # the next epoch sees the new version


def exemplar_rows(n: int, start: int = 0) -> dict[str, Any]:
    return {
        "buffer": ["b"] * n, "sample_id": np.arange(start, start + n), "class_id": np.arange(start, start + n) % 3,
        "task_id": [0] * n, "rank": [1] * n, "nbytes": [4] * n,
        "data": pa.array([np.full(4, i % 256, np.uint8).tobytes() for i in range(start, start + n)], pa.binary()),
        "shape": pa.array([[2, 2]] * n, pa.list_(pa.int32())), "dtype": ["uint8"] * n,
    }  # fmt: skip


def test_store_table_epoch_is_pinned_against_cleanup_and_released_after(store: replaystore.Store) -> None:
    store.append("exemplars", exemplar_rows(30))
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id", "data", "shape", "dtype"]), 8)
    it = iter(stream)
    batch = next(it)
    assert batch["data"].shape == (8, 2, 2) and batch["data"].dtype == torch.uint8
    assert any(tag.startswith("pin-") for tag in store.tags("exemplars"))
    store.append("exemplars", exemplar_rows(5, start=100))
    rest = list(it)
    assert sorted(int(i) for b in [batch, *rest] for i in b["sample_id"]) == list(range(30))
    assert not any(tag.startswith("pin-") for tag in store.tags("exemplars"))
    assert sum(len(b["sample_id"]) for b in stream) == 35


def pins(store: replaystore.Store) -> dict[str, int]:
    return {tag: version for tag, version in store.tags("exemplars").items() if tag.startswith("pin-")}


def test_a_pin_on_the_latest_version_carries_over_to_the_next_epoch_and_moves_with_the_table(store: replaystore.Store) -> None:
    """Short epochs of a replay table take one pin, not two writes per epoch: the next epoch takes over
    a pin whose version is still the latest, and a commit between epochs moves it (new pin first)."""
    store.append("exemplars", exemplar_rows(30))
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id"]), 8)
    held = []
    for _ in range(3):
        assert sum(len(b["sample_id"]) for b in stream) == 30
        held.append(pins(store))
    first = store.dataset("exemplars").version
    assert held == [held[0]] * 3 and list(held[0].values()) == [first], "one pin, the same tag, across the epochs"
    store.append("exemplars", exemplar_rows(5, start=100))
    assert sum(len(b["sample_id"]) for b in stream) == 35
    moved = pins(store)
    assert list(moved.values()) == [first + 1] and moved.keys() != held[0].keys(), "the pin followed the table"
    stream.close()
    assert pins(store) == {}


def test_a_held_pin_is_released_by_close_by_garbage_collection_and_is_renewed_when_old(store: replaystore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import replaystore.stream.pins

    store.append("exemplars", exemplar_rows(30))
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id"]), 8)
    list(stream)
    assert len(pins(store)) == 1
    del stream
    gc.collect()
    assert pins(store) == {}, "a dropped stream keeps nothing pinned"
    monkeypatch.setattr(replaystore.stream.pins, "RENEW_AFTER", 0.0)  # every held pin counts as old
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id"]), 8)
    seen = []
    for _ in range(3):
        list(stream)
        seen.append(pins(store))
    assert [len(p) for p in seen] == [1, 1, 1] and len({tag for p in seen for tag in p}) == 3, "taken again each epoch, one at a time"
    stream.close()


def test_a_process_that_ends_without_close_leaves_no_pin(store: replaystore.Store) -> None:
    store.append("exemplars", exemplar_rows(30))
    reader = (
        "import replaystore; from replaystore.stream import ReplayStream, Source\n"
        f"store = replaystore.open({store.uri!r})\n"
        "stream = ReplayStream(Source.from_store(store, 'exemplars', columns=['sample_id']), 8)\n"
        "assert sum(len(b['sample_id']) for b in stream) == 30\n"
        "assert any(t.startswith('pin-') for t in store.tags('exemplars'))\n"
    )
    subprocess.run([sys.executable, "-c", reader], check=True, cwd=ROOT, timeout=300)
    assert pins(store) == {}


def test_filtered_projected_renamed_sources_mix_into_one_schema(store: replaystore.Store) -> None:
    store.append("exemplars", exemplar_rows(30))
    task = pa.table({"label": np.arange(50) % 3, "sample_id": np.arange(50) + 500})
    stream = ReplayStream(
        [
            Source.from_arrow("task", task, rename={"label": "class_id"}, filter="label < 2"),
            Source.from_store(store, "exemplars", columns=["class_id", "sample_id"], filter="class_id = 2"),
        ],
        10, mixing=ExactK(3),
    )  # fmt: skip
    batches = list(stream)
    replay = torch.cat([b["class_id"][b["_source"] == 1] for b in batches])
    assert set(replay.tolist()) == {2} and len(replay) == 3 * len(batches)
    assert sorted(int(i) for b in batches for i in b["sample_id"][b["_source"] == 0]) == [500 + i for i in range(50) if i % 3 < 2]


def test_curriculum_source_admits_rows_by_pacing_and_resumes() -> None:
    from replaystore.curriculum import CurriculumSampler
    from replaystore.curriculum.pacing import LinearPacing

    difficulty = np.linspace(0, 1, 100)

    def stream() -> ReplayStream:
        curriculum = CurriculumSampler(difficulty, LinearPacing(0.1, 20), seed=1)
        return ReplayStream(Source.from_arrow("c", rows(100), sampler=Curriculum(curriculum)), 8, steps_per_epoch=25, prefetch=2)

    whole = [b["id"].numpy() for b in stream()]
    assert whole[0].max() <= 10 and max(b.max() for b in whole[-5:]) > 50  # easy rows first, harder later
    for step, batch in enumerate(whole[:20]):
        assert difficulty[batch].max() <= min(1, 0.1 + 0.9 * step / 20) + 1e-9
    first = stream()
    it = iter(first)
    head = [next(it)["id"].numpy() for _ in range(7)]
    resumed = stream()
    resumed.load_state_dict(first.state_dict())
    assert [b.tolist() for b in head + [b["id"].numpy() for b in resumed]] == [b.tolist() for b in whole]
    two = stream()
    two.set_epoch(0)
    assert [b["id"].tolist() for b in shard_batches(two, 2)] == [b.tolist() for b in whole]


@pytest.mark.slow  # spawn workers import torch and Lance afresh (~15 s)
def test_dataloader_with_spawn_workers_yields_the_single_process_sequence(tmp_path: Path) -> None:
    """Persistent workers, two epochs without set_epoch, a break mid-epoch and a checkpoint taken
    from the main process alone: the loader's batches are the single-process stream's."""
    import lance

    uri = str(tmp_path / "t.lance")
    lance.write_dataset(rows(300), uri, max_rows_per_file=64)

    def stream() -> ReplayStream:
        return ReplayStream(Source.from_lance("t", uri, sampler=Shuffled()), 8, seed=2)

    single = stream()
    expected = [ids_of(list(single)) for _ in range(3)]
    ours = stream()
    loader = ours.loader(num_workers=2)
    assert ids_of(list(loader)) == expected[0]
    head = []
    for batch in loader:  # epoch 1, interrupted
        head += batch["id"].tolist()
        if len(head) == 80:
            break
    state = ours.state_dict()  # the main process knows what the loop consumed
    assert state["epoch"] == 1 and state["step"] == 10
    assert head + ids_of(list(loader)) == expected[1]
    assert ids_of(list(loader)) == expected[2]
    ours.load_state_dict(state)  # the same loader: its workers restart from the checkpoint
    assert head + ids_of(list(loader)) == expected[1]
    resumed = stream()
    resumed.load_state_dict(state)
    assert head + ids_of(list(resumed.loader(num_workers=2))) == expected[1]
    ours.close()


def test_bad_settings_name_the_field() -> None:
    src = Source.from_arrow("t", rows(10))
    cases = [
        (lambda: ReplayStream(src, 0), "batch_size"),
        (lambda: ReplayStream([src, Source.from_arrow("r", rows(3))], 4), "mixing"),
        (lambda: ReplayStream(Source.from_arrow("u", rows(3), sampler=Uniform()), 4), "steps_per_epoch"),
        (lambda: ReplayStream(src, 4, rank=2, world_size=2), "rank"),
        (lambda: Source.from_arrow("t", rows(3), columns=["nope"]), "columns"),
        (lambda: Source.from_arrow("bad/name", rows(3)), "table name"),
        (lambda: Prioritized(alpha=-1), "alpha"),
        (lambda: list(ReplayStream([src, Source.from_arrow("r", rows(3))], 4, mixing=ExactK(4))), "k"),
        (lambda: list(ReplayStream([src, Source.from_arrow("r", rows(3))], 4, mixing=Proportions([1.0]))), "weights"),
        *([(lambda: ReplayStream(src, 4, pin_memory=True), "pin_memory")] if not torch.cuda.is_available() else []),
        (lambda: ReplayStream(src, 4, rank=0, world_size=2).for_rank(1, 2), "rank"),
        (lambda: ReplayStream(src, 4).for_rank(3, 2), "rank"),
    ]
    for make, field in cases:
        with pytest.raises(ValidationError) as err:
            make()
        assert err.value.field == field, (field, err.value)


def test_all_zero_priorities_are_refused_by_name() -> None:
    sampler = Prioritized()
    stream = ReplayStream(Source.from_arrow("p", rows(5), sampler=sampler), 4, steps_per_epoch=1, prefetch=0)
    stream.set_epoch(0)
    sampler.reset(5, np.zeros(5))
    stream._sampler_epoch = 0
    with pytest.raises(ValidationError) as err:
        list(stream)
    assert err.value.field == "priorities"


def test_priority_feedback_is_validated() -> None:
    stream = ReplayStream(Source.from_arrow("p", rows(10), sampler=Prioritized()), 4, steps_per_epoch=2)
    with pytest.raises(ValidationError) as err:
        stream.update_priorities({"_source": torch.zeros(4), "_position": torch.arange(4)}, [1.0] * 4)
    assert err.value.field == "update_priorities"
    for batch in stream:
        with pytest.raises(ValidationError) as err:
            stream.update_priorities(batch, [1.0])
        assert err.value.field == "losses"
        with pytest.raises(ValidationError) as err:
            stream.update_priorities(batch, [float("nan")] * len(batch["_source"]))
        assert err.value.field == "losses"


def test_a_prioritized_sampler_unpickled_with_read_only_arrays_still_folds_its_pending_updates() -> None:
    """Ray hands unpickled numpy arrays out read-only: a stream trained in-process, then sent to Ray
    Train workers, carries pending priority updates that its workers must fold into `base`."""
    sampler = Prioritized()
    sampler.reset(4)
    sampler.update_priority(np.array([1, 3]), np.array([2.0, 5.0]), at_step=1)
    state = sampler.__getstate__()
    state["base"] = state["base"].copy()
    state["base"].setflags(write=False)  # as Ray's zero-copy deserialisation leaves it
    received = Prioritized.__new__(Prioritized)
    received.__setstate__(state)
    received.consumed(1)
    assert received.base.tolist() == [1.0, 2.0 + sampler.eps, 1.0, 5.0 + sampler.eps] and received.log == []


draws = st.builds(
    Draw, n=st.integers(1, 500), seed=st.integers(0, 3), epoch=st.integers(0, 3), source=st.integers(0, 2), step=st.integers(0, 50),
    global_step=st.integers(0, 500), cursor=st.integers(0, 2000), total=st.integers(0, 64), offset=st.integers(0, 32), count=st.integers(0, 32),
)  # fmt: skip


cell_plan = st.tuples(st.integers(0, 2000), st.integers(0, 64), st.integers(0, 32), st.integers(0, 32))  # cursor, total, offset, count


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.lists(cell_plan, min_size=1, max_size=8), st.booleans())
def test_forward_runs_are_what_the_sequential_sampler_draws(n: int, cells: list[tuple[int, int, int, int]], one_rank: bool) -> None:
    """The stream's shortcut for a chunk of `Sequential` cells gives the sampler's own positions for
    each cell, and declines exactly when a cell wraps past the end (the sampler's passes apply)."""
    if one_rank:  # each cell starts where the one before ended, as one rank's steps do
        cursor = cells[0][0]
        cells = [(cursor + sum(c[3] for c in cells[:k]), count, 0, count) for k, (_, _, _, count) in enumerate(cells)]
    runs = forward_runs(cells, n)
    wraps = any((cursor + offset) % n + count > n for cursor, _, offset, count in cells)
    assert (runs is None) == wraps
    for k, cell in enumerate(runs or []):
        expected, _ = Sequential().positions(draw(cells[k], n=n, seed=0, epoch=0, source=0, step=k, global_step=k))
        assert cell.dtype == np.int64 and cell.tolist() == expected.tolist()


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([Sequential, Shuffled, Uniform]), st.lists(draws, min_size=1, max_size=6))
def test_samplers_that_claim_pure_draws_draw_from_the_draw_alone(kind: type, cells: list[Draw]) -> None:
    """What lets the stream draw them without its lock: no state that drawing, consuming or
    checkpointing could see half-changed."""
    assert kind.pure_draws
    used, fresh = kind(), None
    for cell in cells:
        used.positions(cell)  # draws before, in any order, change nothing
        used.consumed(cell.global_step)
    for cell in reversed(cells):
        fresh = kind()
        assert np.array_equal(used.positions(cell)[0], fresh.positions(cell)[0])
    assert used.state_dict() == {} == (fresh.state_dict() if fresh else {})
    assert not Prioritized.pure_draws and not Curriculum.pure_draws


def test_a_shuffled_sampler_shared_by_streams_of_different_seeds_gives_each_its_own_order() -> None:
    """Its cached permutation is keyed by the seed too: one instance in two streams seeded apart
    handed the second stream the first one's order."""
    shared = Shuffled()
    for seed in (0, 1, 0):
        cell = Draw(n=50, seed=seed, epoch=0, source=0, step=0, global_step=0, cursor=0, total=50, offset=0, count=50)
        assert shared.positions(cell)[0].tolist() == Shuffled().positions(cell)[0].tolist()
