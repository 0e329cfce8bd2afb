"""Crash safety and undo on real Lance tables: SIGKILL a writer mid-flow, many times; restore any flow.

The flow below is what every replaystore flow is built from: a read-check-append under the table
lock, a merge (upsert) and an update, with compaction in between. It is written to be rerun after
an interruption; the tests kill it during each kind of write and then check what a reader sees.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
import replaystore.store as store_module
from replaystore.errors import NotFoundError

BATCH = 50
BATCHES = 8
PHASES = ("append", "merge", "update", "compact")


def batch_rows(b: int, nbytes: int = 64) -> dict[str, list[int] | list[str]]:
    ids = list(range(b * BATCH, (b + 1) * BATCH))
    return {
        "buffer": ["crash"] * BATCH,
        "sample_id": ids,
        "class_id": [i % 10 for i in ids],
        "task_id": [b] * BATCH,
        "rank": [1] * BATCH,
        "nbytes": [nbytes] * BATCH,
    }


def flow(uri: str, phase: Any = None) -> None:
    """Append each batch once, then rewrite it by merge and update; compact every other batch.

    `phase` (a shared integer) tells the test which write is in progress, so it can kill the
    process during each kind of write.
    """
    store = replaystore.open(uri)
    store.create_table("exemplars")

    def enter(name: str) -> None:
        if phase is not None:
            phase.value = PHASES.index(name)

    for b in range(BATCHES):
        with store.lock("exemplars"):  # read-check-write; the kernel drops the lock if we are killed
            if store.count("exemplars", filter=f"task_id = {b}") == 0:
                enter("append")
                store.append("exemplars", batch_rows(b))
        enter("merge")
        store.merge("exemplars", batch_rows(b, nbytes=128), on=["buffer", "sample_id"])
        enter("update")
        store.update("exemplars", {"rank": "2"}, where=f"task_id = {b}")
        if b % 2 == 1:
            enter("compact")
            store.compact("exemplars", target_rows_per_fragment=4 * BATCH)


def check_version(table: pa.Table, rows: int) -> None:
    """A committed version reads back whole, and every batch in it is all-or-nothing, per write."""
    assert table.num_rows == rows, "version's rows differ from its manifest"
    grouped = table.group_by("task_id").aggregate(
        [("sample_id", "count"), ("sample_id", "count_distinct"), ("nbytes", "min"), ("nbytes", "max"), ("rank", "min"), ("rank", "max")]
    )
    assert every(pc.equal(grouped["sample_id_count"], BATCH)), "a partial batch is visible"
    assert every(pc.equal(grouped["sample_id_count_distinct"], BATCH)), "a row is duplicated"
    assert every(pc.equal(grouped["nbytes_min"], grouped["nbytes_max"])), "a merge is half applied"
    assert every(pc.equal(grouped["rank_min"], grouped["rank_max"])), "an update is half applied"


def every(mask: pa.ChunkedArray) -> bool:
    return bool(pc.all(mask, min_count=0).as_py())


def content(table: pa.Table) -> list[tuple]:
    """Rows without their write timestamps, in key order: what must converge."""
    cols = ["sample_id", "class_id", "task_id", "rank", "nbytes"]
    return sorted(zip(*(table.column(c).to_pylist() for c in cols)))


ROUNDS_PER_PHASE = 4  # kill rounds aimed at each kind of write: a count, not a time budget


@pytest.mark.slow  # sixteen spawned interpreters import Lance: 7-30 s on 2 shared cores
def test_sigkill_during_appends_merges_updates_and_compaction(tmp_path) -> None:
    uri = str(tmp_path / "store")
    ctx = mp.get_context("spawn")  # Lance is not fork-safe
    rng = random.Random(10)
    checked: set[int] = set()
    kills = {name: 0 for name in PHASES}
    for round_ in range(ROUNDS_PER_PHASE * len(PHASES)):
        target = PHASES[round_ % len(PHASES)]
        phase = ctx.Value("i", -1)
        proc = ctx.Process(target=flow, args=(uri, phase))
        proc.start()
        while proc.is_alive() and phase.value != PHASES.index(target):
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside (or just after) the write
        if proc.is_alive():
            proc.kill()
            kills[target] += 1
        proc.join()

        store = replaystore.open(uri)  # the store always opens
        for info in store.versions("exemplars"):
            if info.version not in checked:
                check_version(store.read("exemplars", version=info.version), info.rows)
                checked.add(info.version)
    # An append round adds one batch at most, so every round finds its kind of write still to do.
    assert all(n >= ROUNDS_PER_PHASE - 1 for n in kills.values()), kills

    flow(uri)  # the rerun converges
    clean = str(tmp_path / "clean")
    flow(clean)
    store = replaystore.open(uri)
    final = store.read("exemplars")
    check_version(final, BATCHES * BATCH)
    assert content(final) == content(replaystore.open(clean).read("exemplars"))
    assert set(final.column("nbytes").to_pylist()) == {128} and set(final.column("rank").to_pylist()) == {2}


def test_a_flow_is_undone_by_restoring_the_version_before_it(store: replaystore.Store) -> None:
    store.append("exemplars", batch_rows(100))
    before = store.tag("exemplars", store.dataset("exemplars").version, "before-flow")
    expected = content(store.read("exemplars"))
    flow(store.uri)  # appends, merges, updates and compacts
    assert content(store.read("exemplars")) != expected
    store.cleanup("exemplars", older_than=timedelta(0))  # the tag keeps the version
    undo = store.restore("exemplars", "before-flow")
    assert content(store.read("exemplars")) == expected
    assert before is None and undo == store.dataset("exemplars").version
    redo = store.restore("exemplars", undo - 1)  # the restore itself can be undone
    assert store.count("exemplars", version=redo) == (BATCHES + 1) * BATCH


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 20)),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("update"), st.integers(0, 20)),
        st.tuples(st.just("compact"), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, data=st.data())
def test_restore_to_any_version_gives_exactly_its_rows(store: replaystore.Store, ops: list[tuple[str, int]], data: st.DataObject) -> None:
    """Property: after any sequence of writes, restoring version v makes the latest read equal v's."""
    name = f"t{data.draw(st.integers(0, 10**9))}"
    store.create_table(name, kind="exemplars")
    snapshots = {store.dataset(name).version: content(store.read(name))}
    for op, b in ops:
        if op == "append":
            store.append(name, batch_rows(b))
        elif op == "delete":
            store.delete(name, f"task_id = {b}")
        elif op == "update":
            store.update(name, {"rank": "rank + 1"}, where=f"task_id = {b}")
        else:
            store.compact(name)
        snapshots[store.dataset(name).version] = content(store.read(name))
    target = data.draw(st.sampled_from(sorted(snapshots)))
    store.restore(name, target)
    assert content(store.read(name)) == snapshots[target]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Sets `now` for replaystore.store (cleanup's cutoff, a pin's time), so a test moves time on
    without sleeping. Version timestamps stay Lance's own, real, commit times."""

    class Clock(datetime):
        at = datetime.now(UTC)

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return cls.at.astimezone(tz)

    monkeypatch.setattr(store_module, "datetime", Clock)

    def set_now(at: datetime) -> None:
        Clock.at = at

    return set_now


def test_cleanup_counts_age_from_when_a_version_was_superseded(store: replaystore.Store, clock: Callable[[datetime], None]) -> None:
    """A reader that resolved "the latest" a moment ago can still pin it, however old its commit."""
    first = store.append("exemplars", batch_rows(0))
    second = store.append("exemplars", batch_rows(1))
    committed = {v.version: v.timestamp for v in store.versions("exemplars")}
    assert committed[first] < committed[second]
    hour = timedelta(hours=1)
    # `first` was committed more than an hour ago, but superseded less than an hour ago.
    clock(committed[first] + (committed[second] - committed[first]) / 2 + hour)
    store.cleanup("exemplars", older_than=hour)
    assert first in [v.version for v in store.versions("exemplars")], "removed a version superseded just now"
    clock(committed[second] + 2 * hour)  # now superseded more than an hour ago
    with store.pin("exemplars", first) as pinned:
        store.cleanup("exemplars", older_than=hour)
        assert store.count("exemplars", version=pinned) == BATCH, "the pin held"
    store.cleanup("exemplars", older_than=hour)
    assert [v.version for v in store.versions("exemplars")] == [second]


def test_pinning_the_latest_after_cleanup_removed_it_pins_the_latest_now(store: replaystore.Store) -> None:
    """The race a pinner of "the latest" meets: the version it resolved is superseded and cleaned up
    before its tag lands. A pin of the latest pins the version that is the latest now; a pin of a
    named version says it is gone, in one line, and leaves no tag behind."""
    store.append("exemplars", batch_rows(0))
    resolved = store.dataset("exemplars")  # "the latest", as a reader resolved it a moment ago
    newer = store.append("exemplars", batch_rows(1))
    store.cleanup("exemplars", older_than=timedelta(0))  # removes the resolved version before it is tagged
    with store.pin("exemplars", opened=resolved) as pinned:
        assert pinned == newer and store.count("exemplars", version=pinned) == 2 * BATCH
        assert [v for t, v in store.tags("exemplars").items() if t.startswith("pin-")] == [newer]
    with (
        pytest.raises(NotFoundError, match=f"table 'exemplars' has no version {resolved.version} any more"),
        store.pin("exemplars", resolved.version, opened=resolved),
    ):
        pass
    assert store.tags("exemplars") == {}


LISTING_ROUNDS = 20


def _pin_and_release(uri: str, stop: Any, cycles: Any) -> None:
    store = replaystore.open(uri)
    while not stop.is_set():
        with store.pin("exemplars"):
            pass
        cycles.value += 1  # only this process writes it


@contextlib.contextmanager
def _pinners(uri: str, n: int = 2) -> Iterator[list[Any]]:
    """`n` processes pinning and releasing the latest version until the block ends; yields their
    cycle counters once every one of them has completed a cycle."""
    ctx = mp.get_context("spawn")
    stop, cycles = ctx.Event(), [ctx.Value("i", 0, lock=False) for _ in range(n)]
    pinners = [ctx.Process(target=_pin_and_release, args=(uri, stop, c)) for c in cycles]
    for p in pinners:
        p.start()
    try:
        while min(c.value for c in cycles) == 0 and all(p.is_alive() for p in pinners):
            time.sleep(0.01)  # until every pinner is pinning and releasing
        yield cycles
    finally:
        stop.set()
        for p in pinners:
            p.join()
    assert [p.exitcode for p in pinners] == [0] * n


def test_version_and_tag_listings_survive_pins_released_by_other_processes(store: replaystore.Store) -> None:
    """Lance lists tags file by file; a pin released mid-listing must not fail a reader or cleanup."""
    store.append("exemplars", batch_rows(0))
    store.cleanup("exemplars", older_than=timedelta(0))  # one version left: the cleanups below list, and delete nothing
    with _pinners(store.uri) as cycles:
        before = [c.value for c in cycles]
        for _ in range(LISTING_ROUNDS):
            store.versions("exemplars")
            store.tags("exemplars")
            store.cleanup("exemplars", older_than=timedelta(0))
        during = [c.value - b for c, b in zip(cycles, before)]
    assert all(n > 0 for n in during), f"no pin came and went during the listings: {during}"
    assert not any(t.startswith("pin-") for t in store.tags("exemplars"))


def test_cleanup_that_deletes_versions_survives_pins_released_by_other_processes(store: replaystore.Store) -> None:
    """Each round commits a version, so each cleanup has one to delete while pins come and go."""
    store.append("exemplars", batch_rows(0))
    with _pinners(store.uri):
        for b in range(1, LISTING_ROUNDS + 1):
            latest = store.append("exemplars", batch_rows(b))
            store.cleanup("exemplars", older_than=timedelta(0))
            assert store.versions("exemplars")[-1].version == latest  # older ones stay only while a pin held them
    assert store.count("exemplars") == (LISTING_ROUNDS + 1) * BATCH
    store.cleanup("exemplars", older_than=timedelta(0))  # no pin left: every superseded version goes
    assert [v.version for v in store.versions("exemplars")] == [latest]
