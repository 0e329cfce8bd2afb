"""Where a streaming epoch's time goes, for the "where the time goes" notes of docs/benchmarks.md.

`python -m benchmarks.profile_streaming loader --rows 100000` — `stream.loader(num_workers=2)`: wall
time and CPU time per epoch of the main process and of each worker (read from /proc, Linux), beside
the in-process stream's and a memcpy of the epoch's bytes (the copy into shared memory the loader
adds). On a shared machine CPU time is the steadier figure: it says how many cores an epoch needs.

`python -m benchmarks.profile_streaming epochs --rows 50000` — short epochs of a store table: medians
of an epoch with and without the per-epoch pin, with and without the prefetch thread, beside a raw
Lance scan, all interleaved; and the pin's parts timed inside a streaming loop.

`python -m benchmarks.profile_streaming malloc --rows 1000000` — epochs of the compacted tables of
the mixture rows (a single source and the read-once mixture), in turns, in a process where
replaystore tuned glibc's malloc (`replaystore/memory.py`), in one with only the two thresholds
raised (the top pad at glibc's default, as before 2026-12-05) and in one left at glibc's defaults
(`REPLAYSTORE_MALLOC=default`): median and slowest ms per epoch, how many epochs took over 1.5x
the median, and minor page faults per epoch.

`python -m benchmarks.profile_streaming mixtures --rows 1000000` — the compacted tables of the
benchmark's mixture rows: per epoch of a single source, the two mixtures and the floor (the three
tables one after another, each batch copied once), median wall time and CPU time of the whole
process (all threads, Lance's included), and the ratios to the single source each would reach
with as many cores busy as the single source (its CPU per row against the single source's) and at
best (its CPU time spread over every core, none idle).

`python -m benchmarks.profile_streaming stages --rows 1000000` — the same tables, a single source and
the read-once mixture streamed in-line (prefetch=0, so that the stream's own stages run in the main
thread): CPU per row of each stage (drawing the rows, reading them: pulling Lance's batches and
viewing them as numpy, assembling the batches: for the mixture the copy into place) and of Lance's
own threads (their decoding, read from /proc, Linux), and the page faults per epoch, beside a copy
of the same bytes from an epoch-sized array, a chunk at a time: what the assembly costs beyond its
copy. Last, the bound that copy sets: on a machine whose cores are all busy, rows/s go as 1 / CPU
per row, so the mixture can reach at most the single source's CPU over that CPU plus the copy.

`python -m benchmarks.profile_streaming readahead --rows 1000000` — the compacted tables of the
mixture rows streamed with Lance's read-ahead bounded by the stream (local files) and at Lance's
default (`LANCE_DEFAULT_IO_BUFFER_SIZE` set to it), each stream in a fresh process: the first batch's
latency, median wall, CPU and page faults per epoch, and how much the process's peak resident memory
grew while streaming.

`python -m benchmarks.profile_streaming prioritized --rows 100000` — CPU time per step (best of
`--rounds` epochs of 2,000 steps) of the benchmark's prioritized replay through the public API (a
`ReplayStream` over a `Prioritized` in-memory source, 256 rows with their data, then
`update_priorities`) beside cpprb's `PrioritizedReplayBuffer` doing the same, in one process; run it
from an older checkout's package (`PYTHONPATH`) for a before/after.

Not part of `python -m benchmarks` (no peer rows): these are the measurements behind the notes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lance
import numpy as np
import torch

import replaystore
from benchmarks.bench_streaming import (
    BATCH,
    PER_ALPHA,
    PER_BETA,
    RANDOM_BATCH,
    ROW_BYTES,
    WRAPPING,
    consume,
    copied,
    make_table,
    prioritized_loops,
    raw_lance,
    read_once,
    write_compacted,
)
from replaystore.memory import MMAP_THRESHOLD, TRIM_THRESHOLD
from replaystore.stream import Proportions, ReplayStream, Source
from replaystore.stream import dataset as stream_dataset
from replaystore.stream.snapshots import LANCE_IO_BUFFER_ENV
from replaystore.stream.sources import CHUNK_BYTES


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lance_cpu_seconds() -> float:
    """CPU so far of this process's threads that Lance runs (named `lance_*`), in nanoseconds from
    each thread's /proc `schedstat` (Linux): `stat` counts clock ticks, too coarse per thread."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if Path(f"/proc/self/task/{tid}/comm").read_text().startswith("lance"):
                total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
    return total / 1e9


def loader(rows: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(folder)
        lance.write_dataset(make_table(rows), store.table_uri("main"))
        stream = ReplayStream(Source.from_store(store, "main"), BATCH)
        batches = stream.loader(num_workers=2)
        consume(batches)  # spawn and the first epoch, untimed
        pids = [os.getpid()] + [w.pid for w in batches._iterator._workers]  # type: ignore[union-attr]
        before, walls = [_cpu_seconds(p) for p in pids], []
        for _ in range(epochs):
            start = time.perf_counter()
            consume(batches)
            walls.append(time.perf_counter() - start)
        cpu = [(_cpu_seconds(p) - b) / epochs * 1e3 for p, b in zip(pids, before)]
        stream.close()
        inline = ReplayStream(Source.from_store(store, "main"), BATCH)
        consume(inline)
        cpu_start, inline_walls = time.process_time(), []
        for _ in range(epochs):
            start = time.perf_counter()
            consume(inline)
            inline_walls.append(time.perf_counter() - start)
        inline_cpu = (time.process_time() - cpu_start) / epochs * 1e3
        inline.close()
    data = np.random.default_rng(0).standard_normal(rows * ROW_BYTES // 4, dtype=np.float32)
    target = np.zeros_like(data)
    copies = []
    for _ in range(10):
        start = time.perf_counter()
        np.copyto(target, data)
        copies.append(time.perf_counter() - start)
    print(
        f"{rows:,} rows, {epochs} epochs, load {os.getloadavg()[0]:.1f}\n"
        f"  stream.loader(2): wall median {statistics.median(walls) * 1e3:.1f} ms/epoch (best {min(walls) * 1e3:.1f}); "
        f"CPU main {cpu[0]:.1f} + workers {cpu[1]:.1f} + {cpu[2]:.1f} = {sum(cpu):.1f} ms/epoch\n"
        f"  in-process stream: wall median {statistics.median(inline_walls) * 1e3:.1f} ms/epoch (best {min(inline_walls) * 1e3:.1f}); "
        f"CPU {inline_cpu:.1f} ms/epoch\n"
        f"  memcpy of the epoch's {rows * ROW_BYTES / 1e6:.0f} MB: median {statistics.median(copies) * 1e3:.2f} ms"
    )


def _medians(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median ms of each function, run in turns so that all see the same background load."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def epochs(rows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(folder)
        lance.write_dataset(make_table(rows, start=7), store.table_uri("small"))
        uri = store.table_uri("small")

        streams: list[ReplayStream] = []

        def stream(pin: bool, prefetch: int) -> Callable[[], int]:
            made = ReplayStream(Source.from_store(store, "small", pin=pin), BATCH, prefetch=prefetch)
            streams.append(made)
            return lambda: consume(made)

        fns = {
            "pinned, prefetch thread": stream(True, 2),
            "unpinned, prefetch thread": stream(False, 2),
            "pinned, in-line": stream(True, 0),
            "unpinned, in-line": stream(False, 0),
            "raw lance to_batches(1024)": lambda: consume(raw_lance(uri)),
        }
        got = _medians(fns, rounds)
        raw = got["raw lance to_batches(1024)"]
        print(f"{rows:,}-row epochs, median of {rounds}, load {os.getloadavg()[0]:.1f}")
        for name, ms in got.items():
            print(f"  {name}: {ms:.2f} ms ({raw / ms:.2f}× raw)")
        for s in streams:
            s.close()
        parts: dict[str, list[float]] = {"resolve": [], "tag create": [], "tag delete": []}
        tags = type(store.dataset("small").tags)
        create, delete = tags.create, tags.delete
        source = Source.from_store(store, "small")
        resolve = type(source).resolve

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                parts[name].append(time.perf_counter() - start)
                return out

            return run

        try:
            tags.create, tags.delete = timed("tag create", create), timed("tag delete", delete)  # type: ignore[method-assign]
            type(source).resolve = timed("resolve", resolve)  # type: ignore[method-assign]
            looped = ReplayStream(source, BATCH, prefetch=0)
            for _ in range(rounds):
                consume(looped)
            looped.close()
        finally:
            tags.create, tags.delete = create, delete  # type: ignore[method-assign]
            type(source).resolve = resolve  # type: ignore[method-assign]
        print(
            f"  per source, inside a loop of {rounds} epochs of one version: "
            + ", ".join(f"{k} {len(v)}× (median {statistics.median(v) * 1e3:.2f} ms)" for k, v in parts.items() if v)
        )


def mixtures(rows: int, rounds: int) -> None:
    """Whether a mixture could reach 0.9× a single source if it kept every core busy: its CPU time per
    epoch (work that cannot be avoided by scheduling) divided by the cores is the least wall time."""
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(folder)
        sources = [Source.from_store(store, name) for name in write_compacted(store, rows)]
        alone = ReplayStream(sources[0], BATCH)
        apart = [alone, *(ReplayStream(source, BATCH) for source in sources[1:])]
        streams = {
            "single source": alone,
            "mixture 60/30/10": ReplayStream(sources, BATCH, mixing=Proportions(WRAPPING)),
            "mixture 74.2/18.4/7.3 (read once)": ReplayStream(sources, BATCH, mixing=read_once(rows)),
        }
        fns: dict[str, Callable[[], int]] = {name: partial(consume, s) for name, s in streams.items()}
        fns["floor: the three one after another, each batch copied once"] = lambda: copied(apart)
        got: dict[str, list[tuple[float, float, int]]] = {name: [] for name in fns}
        for fn in fns.values():
            fn()  # first epochs (opens, first pass of the tables) untimed
        for _ in range(rounds):
            for name, fn in fns.items():
                cpu, start = time.process_time(), time.perf_counter()
                n = fn()
                got[name].append((time.perf_counter() - start, time.process_time() - cpu, n))
        for s in apart[1:] + list(streams.values()):
            s.close()
    cores = os.cpu_count() or 1
    single_wall = statistics.median(w for w, _, _ in got["single source"])
    single_rate = got["single source"][0][2] / single_wall
    single_cpu = statistics.median(c for _, c, _ in got["single source"]) / got["single source"][0][2]  # CPU seconds per row
    print(f"compacted tables of {rows:,}, {rows // 4:,} and {rows // 10:,} rows, median of {rounds}, {cores} cores, load {os.getloadavg()[0]:.1f}")
    for name, runs in got.items():
        wall, cpu, n = statistics.median(w for w, _, _ in runs), statistics.median(c for _, c, _ in runs), runs[0][2]
        print(
            f"  {name}: {n:,} rows, wall {wall * 1e3:.1f} ms, CPU {cpu * 1e3:.1f} ms ({cpu / n * 1e9:.0f} ns/row, {cpu / wall:.2f} cores busy); "
            f"{n / wall / single_rate:.2f}× the single source; {single_cpu / (cpu / n):.2f}× with as many cores busy as it, "
            f"at best {n / (cpu / cores) / single_rate:.2f}× with all {cores} (CPU over the cores)"
        )


def stages(rows: int, rounds: int) -> None:
    """Stage CPU from `time.thread_time` around the stream's own steps (wrapped for this run only),
    so it is the CPU the main thread spent in them, not time spent waiting for Lance."""
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args)
            finally:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - start

        return run

    drawn, read, assemble = ReplayStream._drawn, ReplayStream._read, stream_dataset.batches
    ReplayStream._drawn = timed("draw", drawn)  # type: ignore[method-assign]
    ReplayStream._read = staticmethod(timed("read", read))  # type: ignore[method-assign]
    stream_dataset.batches = timed("assemble", assemble)
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = replaystore.open(folder)
            sources = [Source.from_store(store, name) for name in write_compacted(store, rows)]
            streams = {
                "single source": ReplayStream(sources[0], BATCH, prefetch=0),
                "read-once mixture": ReplayStream(sources, BATCH, mixing=read_once(rows), prefetch=0),
            }
            got: dict[str, dict[str, float]] = {}
            for name, stream in streams.items():
                consume(stream)  # the first epoch (opens, first pass of the tables) untimed
                spent.clear()
                faults, lance_cpu, cpu, start, n = _minor_faults(), _lance_cpu_seconds(), time.process_time(), time.perf_counter(), 0
                for _ in range(rounds):
                    n += consume(stream)
                wall, cpu, lance_cpu = time.perf_counter() - start, time.process_time() - cpu, _lance_cpu_seconds() - lance_cpu
                got[name] = {"rows": n / rounds, "wall": wall / n, "process": cpu / n, "lance": lance_cpu / n, "faults": (_minor_faults() - faults) / rounds}
                got[name].update({k: v / n for k, v in spent.items()})
                stream.close()
    finally:
        ReplayStream._drawn, ReplayStream._read, stream_dataset.batches = drawn, staticmethod(read), assemble  # type: ignore[method-assign]
    copy = _epoch_copy(int(got["read-once mixture"]["rows"]))
    print(f"compacted tables of {rows:,}, {rows // 4:,} and {rows // 10:,} rows, {rounds} epochs each, in-line, load {os.getloadavg()[0]:.1f}; ns per row:")
    for name, ns in got.items():
        stages_ns = ", ".join(f"{k} {ns[k] * 1e9:.0f}" for k in ("draw", "read", "assemble"))
        other = ns["process"] - ns["lance"] - sum(ns[k] for k in ("draw", "read", "assemble"))
        print(
            f"  {name}: wall {ns['wall'] * 1e9:.0f}, CPU {ns['process'] * 1e9:.0f} ({ns['process'] / ns['wall']:.2f} cores busy) = "
            f"Lance's threads {ns['lance'] * 1e9:.0f} + {stages_ns} + the rest {other * 1e9:.0f}; {ns['faults']:,.0f} page faults per epoch"
        )
    print(f"  a copy of the mixture's {ROW_BYTES} bytes per row from an epoch-sized array into one reused {CHUNK_BYTES >> 20} MB chunk: {copy * 1e9:.0f}")
    single, mixture = got["single source"]["process"], got["read-once mixture"]["process"]
    ratio = got["single source"]["wall"] / got["read-once mixture"]["wall"]
    print(
        f"  the mixture in-line: {ratio:.2f}x the single source's rows/s; with every core busy the ratio is that of CPU per row, "
        f"{single / mixture:.2f}x as measured and at most {single / (single + copy):.2f}x (the single source's CPU plus the copy alone)"
    )


def _minor_faults() -> int:
    """Pages this process has faulted in so far: each one is fresh memory the kernel zeroes first."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _epoch_copy(rows: int) -> float:
    """Seconds per row to copy an epoch's `rows` rows of `ROW_BYTES`, a `CHUNK_BYTES` chunk at a time,
    into one reused chunk: the copy a mixture's assembly cannot avoid, without its bookkeeping."""
    data = np.random.default_rng(0).standard_normal(rows * ROW_BYTES // 4, dtype=np.float32)
    chunk = CHUNK_BYTES // 4
    target = np.zeros(chunk, np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for at in range(0, len(data), chunk):
            piece = data[at : at + chunk]
            np.copyto(target[: len(piece)], piece)
        best = min(best, time.perf_counter() - start)
    return best / rows


def prioritized(rows: int, rounds: int) -> None:
    """CPU time per step, not wall time: a step is ~0.2 ms, so a shared core's other work shows in wall time."""
    from replaystore.stream import Prioritized

    steps, batch = 2000, RANDOM_BATCH
    table = make_table(rows)
    loops, peer = prioritized_loops(table, steps)
    ours = loops(Source.from_arrow("replay", table, sampler=Prioritized(alpha=PER_ALPHA, beta=PER_BETA)))

    best = {"ours": float("inf"), "cpprb": float("inf")}
    for fn in (ours, peer):
        fn()  # first epoch (numba's kernels, the tree) untimed
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("cpprb", peer)):
            cpu = time.process_time()
            fn()
            best[name] = min(best[name], (time.process_time() - cpu) / steps)
    print(f"prioritized batch of {batch} with data + priority update, {rows:,} rows, best of {rounds} epochs of {steps} steps, package {replaystore.__file__}")
    for name, seconds in best.items():
        print(f"  {name}: {seconds * 1e6:.1f} µs of CPU per step")


MALLOC_SETTINGS = {
    "raised by replaystore": {},
    "thresholds only, top pad at glibc's default (before 2026-12-05)": {
        "GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
    },
    "glibc's defaults": {"REPLAYSTORE_MALLOC": "default"},
}


def malloc(rows: int, rounds: int) -> None:
    """Each setting in a fresh process: the settings are process-wide and made once. The tables are
    written once, here, so that no setting's process also carries the memory of writing them."""
    with tempfile.TemporaryDirectory() as folder:
        write_compacted(replaystore.open(folder), rows)
        for setting, extra in MALLOC_SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k not in ("REPLAYSTORE_MALLOC", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
            print(f"malloc {setting}:", flush=True)
            command = [sys.executable, "-m", "benchmarks.profile_streaming", "malloc-one", f"--rows={rows}", f"--rounds={rounds}", f"--folder={folder}"]
            subprocess.run(command, env={**env, **extra}, check=True)


def malloc_one(rows: int, rounds: int, folder: str) -> None:
    """Epochs of the two streams taken in turns; the slowest epoch shows what a run of page faults costs."""
    store = replaystore.open(folder)
    sources = [Source.from_store(store, name) for name in ("main_c", "replay_a_c", "replay_b_c")]
    streams = {"single source": ReplayStream(sources[0], BATCH), "read-once mixture": ReplayStream(sources, BATCH, mixing=read_once(rows))}
    fns = {name: partial(consume, stream) for name, stream in streams.items()}
    for fn in fns.values():
        fn()  # the first epoch (opens, the first pass of the tables) untimed
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults = dict.fromkeys(fns, 0)
    for _ in range(rounds):
        for name, fn in fns.items():
            before, start = _minor_faults(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            faults[name] += _minor_faults() - before
    for stream in streams.values():
        stream.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, spent in times.items():
        median = statistics.median(spent)
        slow = sum(t > 1.5 * median for t in spent)
        print(
            f"  {name}: median {median * 1e3:.1f} ms/epoch, slowest {max(spent) * 1e3:.1f}, {slow} of {rounds} epochs over 1.5x the median; "
            f"{faults[name] / rounds:,.0f} page faults/epoch"
        )
    print(f"  peak resident memory {peak:.0f} MB")


def readahead(rows: int, rounds: int) -> None:
    """Each (setting, stream) in a fresh process, since peak memory is per process; the tables are
    written once, here."""
    with tempfile.TemporaryDirectory() as folder:
        write_compacted(replaystore.open(folder), rows)
        for setting in ("bounded by the stream", "Lance's default (2 GiB)"):
            env = {k: v for k, v in os.environ.items() if k != LANCE_IO_BUFFER_ENV}
            if setting.startswith("Lance"):
                env[LANCE_IO_BUFFER_ENV] = str(2 * 2**30)  # what Lance uses unset; set, the stream leaves scans to it
            for which in ("single", "read-once mixture"):
                print(f"Lance read-ahead {setting}, {which}:", flush=True)
                command = [sys.executable, "-m", "benchmarks.profile_streaming", "readahead-one", f"--rows={rows}", f"--rounds={rounds}"]
                subprocess.run([*command, f"--folder={folder}", f"--stream={which}"], env=env, check=True)


def readahead_one(rows: int, rounds: int, folder: str, which: str) -> None:
    store = replaystore.open(folder)
    sources = [Source.from_store(store, name) for name in ("main_c", "replay_a_c", "replay_b_c")]
    stream = ReplayStream(sources[0], BATCH) if which == "single" else ReplayStream(sources, BATCH, mixing=read_once(rows))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    batches = iter(stream)
    next(batches)
    first = time.perf_counter() - start
    consume(batches)
    walls, cpus, faults = [], [], []
    for _ in range(rounds):
        flt, cpu, start = _minor_faults(), time.process_time(), time.perf_counter()
        n = consume(stream)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        faults.append(_minor_faults() - flt)
    stream.close()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    print(
        f"  {n:,} rows/epoch: first batch of the first epoch {first * 1e3:.1f} ms; median of {rounds} epochs: wall {statistics.median(walls) * 1e3:.1f} ms, "
        f"CPU {statistics.median(cpus) * 1e3:.1f} ms, {statistics.median(faults):,.0f} page faults; peak resident memory +{grown:.0f} MB from streaming"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_streaming")
    parser.add_argument("case", choices=["loader", "epochs", "mixtures", "stages", "prioritized", "malloc", "malloc-one", "readahead", "readahead-one"])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30, help="epochs timed (loader) or rounds of turns (epochs)")
    parser.add_argument("--folder", help="readahead-one, malloc-one: the store the parent command wrote")
    parser.add_argument("--stream", choices=["single", "read-once mixture"], help="readahead-one: which stream")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.case == "readahead-one":
        readahead_one(args.rows, args.rounds, args.folder, args.stream)
        return
    if args.case == "malloc-one":
        malloc_one(args.rows, args.rounds, args.folder)
        return
    cases = {
        "loader": loader,
        "epochs": epochs,
        "mixtures": mixtures,
        "stages": stages,
        "prioritized": prioritized,
        "malloc": malloc,
        "readahead": readahead,
    }
    cases[args.case](args.rows, args.rounds)


if __name__ == "__main__":
    main()
