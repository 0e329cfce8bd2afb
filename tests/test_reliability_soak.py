"""Soak: six processes on one store at once, then an audit of what every one of them did.

An exemplar appender, an experience appender (real MiniLM embeddings), a `retrieve`/`record_use`
updater, a pruner (budget rebalance and ReMe's utility rule), a compactor (compaction and version
cleanup) and a streaming reader run together until each has done a set number of steps. Each writes a log of what it did;
the audit then checks that every appended row is present exactly once unless a rule removed it,
that counters equal the sums of increments, that the budget held in every version, and that the
reader only ever saw whole versions.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

import replaystore

BUFFER = "soak"
SAMPLE_BYTES = 16
CLASSES = 6
QUOTA = 12  # rows per class once every class has arrived
BUDGET = CLASSES * QUOTA * SAMPLE_BYTES
STEPS = 8  # the soak lasts until every role has done this many steps (a loaded machine just takes longer; the audit needs two of each)
WORKSPACE = "soak"
RETENTION = timedelta(seconds=2)  # longer than any unpinned read; the stream pins its versions


class Gate:
    """Every role waits here after its imports and model loads, so all start together; the parent
    closes the gate once every role has done `STEPS` steps: a count of steps, not a clock."""

    def __init__(self, barrier: Any, stop: Any, steps: Any, role: int) -> None:
        self.barrier, self.stop, self.steps, self.role = barrier, stop, steps, role

    def wait(self) -> None:
        self.barrier.wait()

    def open(self) -> bool:
        return not self.stop.value

    def stepped(self) -> None:
        self.steps[self.role] += 1


def _until(gate: Gate, step: Callable[[int], None], pause: float = 0.0) -> None:
    i = 0
    while gate.open():
        step(i)
        gate.stepped()
        i += 1
        time.sleep(pause)


def _save(path: str, log: Any) -> None:
    Path(path).write_text(json.dumps(log))


def exemplar_appender(uri: str, gate: Gate, out: str) -> None:
    buffer = replaystore.open(uri).exemplars(BUFFER)
    offered: dict[int, list[int]] = {}
    gate.wait()

    def step(i: int) -> None:
        cls = i % CLASSES
        ids = np.arange(1000 + i * 8, 1000 + (i + 1) * 8)
        buffer.add(cls, np.full((8, SAMPLE_BYTES), i % 256, dtype=np.uint8), sample_ids=ids)
        offered.setdefault(cls, []).extend(ids.tolist())

    _until(gate, step)
    _save(out, offered)


def experience_appender(uri: str, gate: Gate, out: str) -> None:
    memory = replaystore.open(uri).experiences(dedup_threshold=1.0)  # keep every lesson: this test counts them
    memory.embedder.embed(["warm up"])  # the first forward pass is slow; keep it out of the soak time
    added: list[str] = []
    gate.wait()

    def step(i: int) -> None:
        report = memory.add(
            [{"when_to_use": f"when step {i}.{j} of the soak fails", "content": f"retry step {i}.{j}"} for j in range(3)],
            workspace=WORKSPACE,
        )
        added.extend(report.added)

    _until(gate, step)
    _save(out, added)


def updater(uri: str, gate: Gate, out: str) -> None:
    memory = replaystore.open(uri).experiences()
    freq: Counter[str] = Counter()
    utility: Counter[str] = Counter()
    rng = random.Random(3)
    memory.embedder.embed(["warm up"])
    gate.wait()

    def step(i: int) -> None:
        hits = memory.retrieve(f"step {rng.randrange(100)} fails", WORKSPACE, k=3)["experience_id"].to_pylist()
        freq.update(hits)
        helpful = [h for h in hits if rng.random() < 0.3]
        if helpful:
            memory.record_use(helpful)
            utility.update(helpful)

    _until(gate, step)
    _save(out, {"freq": freq, "utility": utility})


def pruner(uri: str, gate: Gate, out: str) -> None:
    store = replaystore.open(uri)
    buffer, memory = store.exemplars(BUFFER), store.experiences()
    archived: list[str] = []
    gate.wait()

    def step(i: int) -> None:
        buffer.rebalance()
        archived.extend(memory.refine(freq_threshold=3, utility_threshold=0.5, workspace=WORKSPACE)["experience_id"].to_pylist())

    _until(gate, step, pause=0.3)
    _save(out, archived)


def compactor(uri: str, gate: Gate, out: str) -> None:
    store = replaystore.open(uri)
    runs = Counter[str]()
    gate.wait()

    def step(i: int) -> None:
        for table in (BUFFER, "experiences"):
            store.compact(table)
            store.cleanup(table, older_than=RETENTION)
            runs[table] += 1

    _until(gate, step, pause=0.5)
    _save(out, runs)


def reader(uri: str, gate: Gate, out: str) -> None:
    from replaystore.stream import ReplayStream, Source

    store = replaystore.open(uri)
    stream = ReplayStream(Source.from_store(store, BUFFER, columns=["sample_id"]), batch_size=16)
    epochs: list[dict[str, Any]] = []
    gate.wait()

    def step(i: int) -> None:
        stream.set_epoch(stream.epoch)  # resolves and pins this epoch's version
        version = stream.versions[0]
        expected = sorted(store.read(BUFFER, version=version, columns=["sample_id"])["sample_id"].to_pylist())
        seen = sorted(int(x) for batch in stream for x in batch["sample_id"])
        epochs.append({"version": version, "rows": len(expected), "whole": seen == expected})

    _until(gate, step)
    _save(out, epochs)


ROLES = [exemplar_appender, experience_appender, updater, pruner, compactor, reader]


@pytest.mark.slow
def test_soak_six_processes_then_audit(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    store = replaystore.open(uri)
    buffer = store.exemplars(BUFFER, budget=BUDGET, selector="random", policy="fixed_total")
    for cls in range(CLASSES):  # every class present, so the quota is final and the reader has rows
        buffer.add(cls, np.zeros((1, SAMPLE_BYTES), dtype=np.uint8), sample_ids=[cls])
    seeded = store.experiences(dedup_threshold=1.0).add(
        [{"when_to_use": f"when seed lesson {i} applies", "content": f"seed {i}"} for i in range(4)], workspace=WORKSPACE
    )

    ctx = mp.get_context("spawn")  # Lance is not fork-safe
    barrier, stop, steps = ctx.Barrier(len(ROLES) + 1), ctx.Value("b", 0), ctx.Array("i", len(ROLES))
    logs = {role.__name__: str(tmp_path / f"{role.__name__}.json") for role in ROLES}
    procs = [ctx.Process(target=_run, args=(role, uri, barrier, stop, steps, i, logs[role.__name__])) for i, role in enumerate(ROLES)]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)  # everyone has set up: the soak starts now, for all at once
    while min(steps[:]) < STEPS:  # roles that are done go on until the slowest catches up
        time.sleep(0.1)
    stop.value = 1
    for proc in procs:
        proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * len(ROLES), {r.__name__: p.exitcode for r, p in zip(ROLES, procs)}
    log = {name: json.loads(Path(path).read_text()) for name, path in logs.items()}

    # Exemplars: each kept row offered once and present once; what is missing was cut by the budget.
    table = store.read(BUFFER, columns=["class_id", "sample_id", "nbytes"])
    ids = table["sample_id"].to_pylist()
    assert len(ids) == len(set(ids)), "an exemplar row is duplicated"
    offered = {int(c): offers for c, offers in log["exemplar_appender"].items()}
    assert sum(map(len, offered.values())) > 0
    for cls in range(CLASSES):
        kept = set(table.filter(pc.equal(table["class_id"], cls))["sample_id"].to_pylist())
        assert kept <= {cls, *offered.get(cls, [])}, f"class {cls} holds a row nobody offered"
        assert len(kept) == min(1 + len(offered.get(cls, [])), QUOTA), f"class {cls} was cut below its quota"
    # The budget held in every version still on storage.
    for info in store.versions(BUFFER):
        used = pc.sum(store.read(BUFFER, version=info.version, columns=["nbytes"])["nbytes"]).as_py() or 0
        assert used <= BUDGET, f"version {info.version} holds {used} B of a {BUDGET} B budget"

    # Experiences: every added lesson present exactly once; counters are the sums of increments.
    rows = store.read("experiences", columns=["experience_id", "freq", "utility", "status"]).to_pylist()
    present = Counter(r["experience_id"] for r in rows)
    added = [*seeded.added, *log["experience_appender"]]
    assert len(log["experience_appender"]) > 0
    assert present == Counter(added), "an experience was lost or added twice"
    by_id = {r["experience_id"]: r for r in rows}
    assert {i: r["freq"] for i, r in by_id.items() if r["freq"]} == log["updater"]["freq"]
    assert {i: r["utility"] for i, r in by_id.items() if r["utility"]} == log["updater"]["utility"]
    archived = {i for i, r in by_id.items() if r["status"] == "archived"}
    assert archived == set(log["pruner"]), "an experience was archived outside the utility rule's runs"
    assert all(by_id[i]["freq"] >= 3 for i in archived)

    # The reader saw whole versions only, and saw the table change.
    epochs = log["reader"]
    assert len(epochs) >= 2 and all(e["whole"] for e in epochs), epochs
    assert len({e["version"] for e in epochs}) >= 2
    assert min(log["compactor"].values()) >= 2


def _run(role: Callable[[str, Gate, str], None], uri: str, barrier: Any, stop: Any, steps: Any, index: int, out: str) -> None:
    role(uri, Gate(barrier, stop, steps, index), out)
