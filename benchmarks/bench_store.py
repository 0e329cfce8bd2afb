"""Store write and scan rates beside plain Parquet (pyarrow), measured in the same run.

Scale 1.0 is the reference workload of `REFERENCES.md`: 1M rows of a 64-d float32 vector and two
int64 columns, appended as 100 commits of 10k rows. What is measured, and why it matters:

- append: one validated Lance commit per batch vs a raw Lance append of the same Arrow table (the
  cost of validation) and vs one Parquet file per batch (the cost of versions).
- commit latency vs history: an append into a table that already has many fragments, because the
  manifest lists every fragment (this is what compaction bounds at 1B rows; see docs/scaling.md).
- update / merge: Lance rewrites the touched rows (deletion vector + new fragment) as one version;
  plain Parquet has no update, so its peer rewrites the one file that holds the rows.
- concurrent appends: two processes committing at once (conflicts retried).
- scan vs fragment count, before and after compaction, vs a Parquet dataset of as many files.
- vector index bytes per row (IVF_PQ), the figure the 1B-row index size is extrapolated from.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing as mp
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

import replaystore
from benchmarks.common import Result, cli, timer
from replaystore import schemas

DIM = 64
ROWS = 1_000_000
BATCH = 10_000
APPEND_COMMITS = 50  # at least: a median of fewer commits swings with the load of a shared machine
KIND = "exemplars"


def make_batch(start: int, n: int) -> pa.Table:
    """`n` exemplar rows with a 64-d float32 feature vector, conformed to the table's schema.

    Ours and the Parquet peer write this same Arrow table, so the peer pays no validation and we do.
    """
    rng = np.random.default_rng(start)
    ids = np.arange(start, start + n, dtype=np.int64)
    features = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * DIM), pa.array(rng.standard_normal(n * DIM, dtype=np.float32)))
    rows = {
        "buffer": pa.array(["bench"] * n),
        "sample_id": pa.array(ids),
        "class_id": pa.array(ids % 100),
        "task_id": pa.array(ids // 100_000),
        "features": features,
        "rank": pa.array(np.ones(n, dtype=np.int32)),
        "nbytes": pa.array(np.full(n, DIM * 4, dtype=np.int64)),
    }
    return schemas.conform(rows, schemas.load_spec(KIND).arrow_schema())


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        with timer() as elapsed:
            fn()
        times.append(elapsed())
    return min(times)


def _write_fragments(store: replaystore.Store, name: str, data: pa.Table, fragments: int) -> None:
    """Each append adds a fragment; writing `fragments` files in one commit gives the same layout faster."""
    store.create_table(name, kind=KIND)
    per = max(1, data.num_rows // fragments)
    lance.write_dataset(data, store.table_uri(name), mode="append", max_rows_per_file=per, max_rows_per_group=min(1024, per))


def bench_appends(root: Path, batches: int, batch: int) -> list[Result]:
    """Validated appends beside raw Lance appends of the same Arrow table (what validation, the
    schema check and the open cost) and beside one Parquet file per batch (what versions cost).
    The three writers take turns (`_take_turns`), so a busy shared CPU slows each alike."""
    store = replaystore.open(str(root / "store"))
    store.create_table(KIND)
    raw_uri = str(root / "raw.lance")
    lance.write_dataset(schemas.load_spec(KIND).arrow_schema().empty_table(), raw_uri)
    parquet_dir = root / "parquet-append"
    parquet_dir.mkdir(parents=True)
    times: dict[str, list[float]] = {"ours": [], "lance": [], "parquet": []}
    gc.collect()
    gc.disable()  # as timeit does: a collection the loop's own garbage triggers would land in whichever write runs then
    try:
        _take_turns(store, raw_uri, parquet_dir, batches, batch, times)
    finally:
        gc.enable()
    ours, lance_s, parquet_s = (statistics.median(times[k]) for k in ("ours", "lance", "parquet"))
    p95 = 1000 * sorted(times["ours"])[int(0.95 * (len(times["ours"]) - 1))]
    opening, checking = _append_overheads(store, raw_uri, batches, batch)
    return [
        Result(
            "store",
            f"append {batch:,} rows (validated, one version)",
            "ms per commit",
            1000 * ours,
            1000 * lance_s,
            'raw Lance write_dataset(mode="append") of the same Arrow table',
            higher_is_better=False,
            target="≥ 0.95× raw Lance",
            notes=f"{batches} commits each, median; p95 ours {p95:.1f} ms; of ours, measured apart right after a commit: "
            f"opening the table {1000 * opening:.2f} ms (the peer opens it inside its write), "
            f"schema-version check + validation {1000 * checking:.2f} ms",
        ),
        Result(
            "store",
            f"append {batch:,} rows (validated, one version)",
            "ms per commit",
            1000 * ours,
            1000 * parquet_s,
            "pyarrow write_table, one Parquet file per batch",
            higher_is_better=False,
            notes="no manifest, no versions",
        ),
        Result(
            "store", f"append {batch:,} rows", "rows per second", batch / ours, batch / lance_s, 'raw Lance write_dataset(mode="append")', higher_is_better=True
        ),
    ]


def _take_turns(store: replaystore.Store, raw_uri: str, parquet_dir: Path, batches: int, batch: int, times: dict[str, list[float]]) -> None:
    """Each batch written by the three writers in one of the six orders, the orders in turn: each
    writer follows each other one equally often (the Parquet write, the longest and most
    memory-hungry, leaves the next write slower; a rotation of one order had ours follow it twice as
    often as raw Lance)."""
    for i in range(batches):
        table = make_batch(i * batch, batch)
        writers: list[tuple[str, Callable[[], object]]] = [
            ("ours", lambda: store.append(KIND, table)),  # noqa: B023 - called in this iteration
            ("lance", lambda: lance.write_dataset(table, raw_uri, mode="append")),  # noqa: B023
            ("parquet", lambda: pq.write_table(table, parquet_dir / f"part-{i:05d}.parquet")),  # noqa: B023
        ]
        orders = list(itertools.permutations(writers))
        for name, write in orders[i % len(orders)]:
            with timer() as elapsed:
                write()
            times[name].append(elapsed())


def _append_overheads(store: replaystore.Store, raw_uri: str, batches: int, batch: int) -> tuple[float, float]:
    """Median seconds of what an append does besides Lance's write: opening the table, and checking
    its schema version + validating the rows. Each is timed right after a raw Lance commit, where an
    append's own checks run (caches and cores still busy with the write)."""
    opening, checking = [], []
    for i in range(min(batches, 20)):
        table = make_batch(i * batch, batch)
        lance.write_dataset(table, raw_uri, mode="append")
        with timer() as elapsed:
            ds = store.dataset(KIND)
        opening.append(elapsed())
        with timer() as elapsed:
            store.schema_gap(KIND, ds)
            schemas.conform(table, ds.schema)
        checking.append(elapsed())
    return statistics.median(opening), statistics.median(checking)


def bench_commit_vs_fragments(root: Path, fragment_counts: list[int], rows: int) -> list[Result]:
    """Latency of one 100-row append into a table that already holds `k` fragments (the manifest lists them all)."""
    store = replaystore.open(str(root / "store"))
    data, small = make_batch(0, rows), make_batch(10**9, 100)
    results = []
    for k in fragment_counts:
        name = f"frag{k}"
        _write_fragments(store, name, data, k)
        peer_dir = root / f"parquet-frag{k}"
        pads.write_dataset(data, peer_dir, format="parquet", max_rows_per_file=max(1, rows // k), max_rows_per_group=max(1, min(65536, rows // k)))
        ours, peer = [], []
        for j in range(10):
            with timer() as elapsed:
                store.append(name, small)
            ours.append(elapsed())
            with timer() as elapsed:
                pq.write_table(small, peer_dir / f"new-{j}.parquet")
            peer.append(elapsed())
        results.append(
            Result(
                "store",
                f"100-row append into {len(store.dataset(name).get_fragments()) - 10} fragments",
                "ms per commit",
                1000 * statistics.median(ours),
                1000 * statistics.median(peer),
                "pyarrow write_table (no manifest, no versions)",
                higher_is_better=False,
            )
        )
    return results


def bench_updates(root: Path, rows: int, files: int) -> list[Result]:
    """One-row updates and a 1k-row upsert, each one version; Parquet rewrites the file holding the row."""
    store = replaystore.open(str(root / "store"))
    per_file = rows // files
    parquet_dir = root / "parquet-update"
    parquet_dir.mkdir(parents=True)
    for i in range(files):
        table = make_batch(i * per_file, per_file)
        store.append(KIND, table)
        pq.write_table(table, parquet_dir / f"part-{i:05d}.parquet")
    targets = [int(t) for t in np.random.default_rng(1).integers(0, files * per_file, 10)]
    rank = schemas.load_spec(KIND).arrow_schema().get_field_index("rank")

    def ours_update() -> None:
        for t in targets:
            store.update(KIND, {"rank": "rank + 1"}, where=f"sample_id = {t}")

    def peer_update() -> None:
        for t in targets:
            path = parquet_dir / f"part-{t // per_file:05d}.parquet"
            table = pq.read_table(path)
            ranks = table.column("rank").to_numpy().copy()
            ranks[t % per_file] += 1
            pq.write_table(table.set_column(rank, "rank", pa.array(ranks)), path)

    ours = _best(ours_update, 1) / len(targets)
    peer = _best(peer_update, 1) / len(targets)
    with timer() as merge_s:
        store.merge(KIND, make_batch(per_file // 2, 1000), on=["buffer", "sample_id"])
    return [
        Result(
            "store",
            f"update one row by predicate ({files * per_file:,} rows, {files} fragments)",
            "ms per commit",
            1000 * ours,
            1000 * peer,
            "rewrite the Parquet file holding the row",
            higher_is_better=False,
            notes="ours: checked preview of the new values + one version",
        ),
        Result("store", "merge (upsert) 1,000 rows", "ms per commit", 1000 * merge_s(), None, "(plain Parquet has no upsert)", higher_is_better=False),
    ]


def _concurrent_writer(uri: str, worker: int, commits: int, batch: int, start: object) -> None:
    store = replaystore.open(uri)
    batches = [make_batch((worker * commits + i) * batch, batch) for i in range(commits)]
    start.wait()  # type: ignore[attr-defined]
    for table in batches:
        store.append(KIND, table)


def _timed_writers(uri: str, writers: int, commits: int, batch: int) -> float:
    """Seconds for `writers` processes to make `commits` appends each, timed from a common start."""
    replaystore.open(uri).create_table(KIND)
    ctx = mp.get_context("spawn")  # Lance is not fork-safe
    start = ctx.Barrier(writers + 1)
    procs = [ctx.Process(target=_concurrent_writer, args=(uri, w, commits, batch, start)) for w in range(writers)]
    for p in procs:
        p.start()
    start.wait()
    with timer() as elapsed:
        for p in procs:
            p.join()
    if replaystore.open(uri).count(KIND) != writers * commits * batch:
        raise AssertionError("a concurrent append was lost")
    return elapsed()


def bench_concurrent(root: Path, commits: int, batch: int) -> list[Result]:
    two = _timed_writers(str(root / "two-writers"), 2, commits, batch)
    one = _timed_writers(str(root / "one-writer"), 1, 2 * commits, batch)
    return [
        Result(
            "store",
            f"2 processes appending {batch:,}-row batches at once",
            "commits per second",
            2 * commits / two,
            2 * commits / one,
            "one process making the same commits",
            higher_is_better=True,
            notes="conflicts retried; row count checked afterwards",
        ),
    ]


def bench_scan(root: Path, rows: int, fragment_counts: list[int]) -> list[Result]:
    """Full-table scan speed vs fragment count, before and after compaction, vs as many Parquet files."""
    store = replaystore.open(str(root / "store"))
    data = make_batch(0, rows)
    results = []
    for k in fragment_counts:
        name = f"scan{k}"
        _write_fragments(store, name, data, k)
        fragments = len(store.dataset(name).get_fragments())
        peer_dir = root / f"parquet-scan{k}"
        per = max(1, rows // k)
        pads.write_dataset(data, peer_dir, format="parquet", max_rows_per_file=per, max_rows_per_group=min(65536, per))
        parquet = pads.dataset(peer_dir, format="parquet")
        before = _best(lambda: store.read(name))  # noqa: B023 - _best calls it here
        peer = _best(parquet.to_table)
        results.append(
            Result(
                "store",
                f"full scan, {fragments} fragments",
                "GB/s",
                data.nbytes / before / 1e9,
                data.nbytes / peer / 1e9,
                f"pyarrow.dataset over {len(parquet.files)} Parquet files",
                higher_is_better=True,
            )
        )
        if fragments > 1:
            with timer() as compact_s:
                store.compact(name)
            after_fragments = len(store.dataset(name).get_fragments())
            after = _best(lambda: store.read(name))  # noqa: B023 - _best calls it here
            results.append(
                Result(
                    "store",
                    f"full scan after compacting {fragments} → {after_fragments} fragments",
                    "GB/s",
                    data.nbytes / after / 1e9,
                    data.nbytes / before / 1e9,
                    f"the same table before compaction ({fragments} fragments)",
                    higher_is_better=True,
                    notes=f"compaction took {compact_s():.2f} s",
                )
            )
    return results


def bench_index(root: Path, rows: int) -> list[Result]:
    """IVF_PQ bytes per row: what a 1B-row vector index costs on storage (engine-level figure)."""
    rng = np.random.default_rng(2)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(rows * DIM, dtype=np.float32)), DIM)
    uri = str(root / "index.lance")
    ds = lance.write_dataset(pa.table({"id": pa.array(np.arange(rows)), "vector": vectors}), uri)
    partitions = max(1, int(np.sqrt(rows)) // 4)
    with timer() as build_s:
        ds.create_index("vector", index_type="IVF_PQ", num_partitions=partitions, num_sub_vectors=DIM // 8)
    index_bytes = sum(f.stat().st_size for f in (Path(uri) / "_indices").rglob("*") if f.is_file())
    return [
        Result(
            "store",
            f"IVF_PQ index over {rows:,} × {DIM}-d ({partitions} partitions, {DIM // 8} sub-vectors)",
            "bytes per row",
            index_bytes / rows,
            DIM * 4,
            "the raw float32 vector",
            higher_is_better=False,
            notes=f"build {build_s():.1f} s",
        ),
    ]


def run(scale: float = 1.0) -> list[Result]:
    rows = max(20_000, int(ROWS * scale))
    batches = max(5, rows // BATCH)
    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        results = bench_appends(root / "append", max(APPEND_COMMITS, batches), BATCH)
        results += bench_commit_vs_fragments(root / "history", [10, 100, 1000], max(20_000, rows // 10))
        results += bench_updates(root / "update", max(20_000, rows // 10), 20)
        results += bench_concurrent(root / "concurrent", max(5, batches // 4), BATCH)
        results += bench_scan(root / "scan", rows, [1, 100, 1000])
        results += bench_index(root / "index", min(rows, 200_000))
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    cli(run)
