"""Experience utility written back from training: exact freq/utility totals in one update, only for
experience sources, nothing written on bad input, nothing lost to concurrent `record_use` calls."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

import replaystore
from replaystore.errors import ValidationError
from replaystore.stream import ExactK, LossLog, ReplayStream, Shuffled, Source, Uniform, write_utility
from tests.conftest import ROOT

TOPICS = ["a flaky test", "a full disk", "a held lock", "a slow query", "a failed merge", "an expired token", "a stale cache", "a broken build"]
RENAME = {"experience_id": "key", "when_to_use": "text"}


def lessons(store: replaystore.Store, table: str = "experiences") -> Any:
    memory = store.experiences(table)
    memory.upsert([{"experience_id": f"e{i}", "when_to_use": f"When {t} appears", "content": f"Handle {t} step by step"} for i, t in enumerate(TOPICS)])
    return memory


def counters(store: replaystore.Store, table: str = "experiences") -> dict[str, tuple[int, int]]:
    rows = store.read(table, columns=["experience_id", "freq", "utility"]).to_pylist()
    return {r["experience_id"]: (r["freq"], r["utility"]) for r in rows}


def mixture(store: replaystore.Store, table: str = "experiences") -> ReplayStream:
    """New-task rows plus 3 experiences in every batch of 8; `e3` filtered out, so positions ≠ row ids."""
    task = pa.table({"key": [f"t{i}" for i in range(40)], "text": [f"task row {i}" for i in range(40)]})
    return ReplayStream(
        [
            Source.from_arrow("task", task, sampler=Shuffled()),
            Source.from_store(store, table, columns=list(RENAME), rename=RENAME, filter="experience_id != 'e3'", sampler=Uniform()),
        ],
        batch_size=8, mixing=ExactK(3), seed=3, prefetch=0,
    )  # fmt: skip


def train(stream: ReplayStream, threshold: float) -> tuple[LossLog, Counter[str], Counter[str]]:
    """Log every batch (flags on odd steps, none on even ones) and count what the store should get."""
    log, uses, helpful = LossLog(), Counter(), Counter()
    names = [s.name for s in stream.sources]
    for step, batch in enumerate(stream):
        loss = (batch["_position"].double() % 5) / 4  # any per-row value the counts can follow
        flags = (batch["_position"] % 2 == 0) if step % 2 else None
        log.add(names, stream.state_dict()["versions"], batch, loss, helpful=flags)
        judged = flags.numpy() if flags is not None else (loss <= threshold).numpy()
        for key, source, good in zip(batch["key"], batch["_source"].tolist(), judged):
            if source == 1:
                uses[key] += 1
                helpful[key] += int(good)
    return log, uses, helpful


def test_write_back_adds_exact_uses_and_helpful_uses_in_one_update(store: replaystore.Store) -> None:
    memory = lessons(store)
    stream = mixture(store)
    log, uses, helpful = train(stream, threshold=0.5)
    memory.record_use(["e2"])  # another user counted a use meanwhile
    memory.upsert([{"experience_id": "e9", "when_to_use": "When a new lesson arrives", "content": "Store it"}])
    store.delete("experiences", "experience_id = 'e1'")  # later versions shift every position after e1
    before = store.dataset("experiences").version
    [written] = write_utility(store, stream.sources, log.table(), helpful_below=0.5)
    assert written.version == before + 1 == store.dataset("experiences").version  # one update
    assert uses["e1"] > 0 and written.missing == 1  # e1 was trained on but is gone: not counted
    del uses["e1"], helpful["e1"]
    assert (written.experiences, written.uses, written.helpful) == (len(uses), sum(uses.values()), sum(helpful.values()))
    expected = {i: (uses[i], helpful[i] + (i == "e2")) for i in counters(store)}
    assert counters(store) == expected
    assert expected["e3"] == (0, 0) and expected["e9"] == (0, 0)  # filtered out of the stream / added later
    assert 0 < sum(helpful.values()) < sum(uses.values())  # both kinds of judgement were exercised


def test_only_experience_sources_are_counted(store: replaystore.Store) -> None:
    lessons(store)
    other = lessons(store, "lessons")  # another table of the experiences kind: found by its kind
    stream = mixture(store, "lessons")
    log, uses, helpful = train(stream, threshold=1.0)
    [written] = write_utility(store, stream.sources, log.table(), helpful_below=1.0)
    assert written.table == "lessons"
    assert counters(store, "lessons") == {i: (uses[i], helpful[i]) for i in counters(store, "lessons")}
    assert set(counters(store).values()) == {(0, 0)}  # the experiences table was not read, so not touched
    task_only = log.table().filter(pa.compute.equal(log.table()["source"], "task"))
    assert write_utility(store, stream.sources, task_only) == []  # no rule needed: nothing to judge
    assert other.get(["e0"])["freq"].to_pylist() == [uses["e0"]]


def test_bad_input_is_refused_by_name_and_writes_nothing(store: replaystore.Store) -> None:
    lessons(store)
    stream = mixture(store)
    log, _, _ = train(stream, threshold=0.5)
    table = log.table()
    version = store.dataset("experiences").version
    out_of_range = table.set_column(2, "position", pa.compute.add(table["position"], 100))
    cases = [
        (lambda: write_utility(store, stream.sources, table), "helpful_below"),  # unflagged rows, no rule
        (lambda: write_utility(store, stream.sources, table, helpful_below=float("nan")), "helpful_below"),
        (lambda: write_utility(store, stream.sources, out_of_range, helpful_below=0.5), "position"),
        (lambda: write_utility(store, stream.sources[1:], table, helpful_below=0.5), "source"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as err:
            call()
        assert err.value.field == field, (field, err.value)
    assert store.dataset("experiences").version == version
    assert set(counters(store).values()) == {(0, 0)}
    batch = {"_source": torch.zeros(3, dtype=torch.int16), "_position": torch.arange(3)}
    for flags in ([True, False], [1, 0, 1], torch.tensor([0.0, 1.0, 1.0])):
        with pytest.raises(ValidationError) as err:
            LossLog().add(["task"], [None], batch, [0.1, 0.2, 0.3], helpful=flags)
        assert err.value.field == "helpful"


RECORDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import replaystore

    uri, calls, started = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    memory = replaystore.open(uri).experiences()
    for i in range(calls):
        memory.record_use(["e2", "e4", "e2"])
        started.touch()
    """
)


def test_concurrent_record_use_loses_nothing(store: replaystore.Store, tmp_path: Path) -> None:
    memory = lessons(store)
    stream = mixture(store)
    log, uses, helpful = train(stream, threshold=0.5)
    calls, rounds, started = 12, 4, tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, store.uri, str(calls), str(started)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        while not started.exists() and proc.poll() is None:  # write back while the other process counts
            time.sleep(0.05)
        for _ in range(rounds):
            write_utility(store, stream.sources, log.table(), helpful_below=0.5)
    finally:
        _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    recorded = {"e2": 2 * calls, "e4": calls}
    assert counters(memory.store) == {i: (rounds * uses[i], rounds * helpful[i] + recorded.get(i, 0)) for i in counters(store)}
