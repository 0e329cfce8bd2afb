"""`replaystore ui` on 1,000,000-row tables: a page of rows, the priorities page and the curriculum
page, vs DuckDB.

The UI's pages are served in-process (Starlette's test client: the whole request, HTML included,
without a socket). The peer is DuckDB reading the same Lance datasets for the same data a page
shows (the rows of one page with LIMIT/OFFSET; the per-source aggregates and top/bottom rows; an
ordering's difficulties and its source's score values), so
the ratio says what rendering a page costs over just fetching its data. Target: a page in under a second.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
from starlette.testclient import TestClient

import replaystore
from benchmarks.common import Result, cli, timer
from replaystore.curriculum import OrderingDefinition, SqrtPacing, percentiles
from replaystore.schemas import Kind
from replaystore.ui import create_app
from replaystore.ui.tables import PAGE_ROWS

ROWS = 1_000_000
REPEATS = 5


def build(store: replaystore.Store, rows: int, seed: int = 0) -> None:
    """`rows` 8×8 uint8 exemplars and `rows` priorities over four sources."""
    rng = np.random.default_rng(seed)
    now = pa.array(np.full(rows, np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")), pa.timestamp("us", tz="UTC"))
    images = rng.integers(0, 17, (rows, 64), dtype=np.uint8)
    offsets = pa.array(np.arange(0, 64 * rows + 1, 64, dtype=np.int32))
    store.append(
        "exemplars",
        {
            "buffer": pa.array(np.full(rows, "exemplars", dtype=object), pa.string()),
            "sample_id": np.arange(rows, dtype=np.int64),
            "class_id": rng.integers(0, 100, rows),
            "task_id": rng.integers(0, 10, rows),
            "data": pa.BinaryArray.from_buffers(pa.binary(), rows, [None, offsets.buffers()[1], pa.py_buffer(images.tobytes())]),
            "shape": pa.array([[8, 8]] * rows, pa.list_(pa.int32())),
            "dtype": pa.array(np.full(rows, "uint8", dtype=object), pa.string()),
            "rank": rng.integers(1, 500, rows).astype(np.int32),
            "nbytes": np.full(rows, 64, dtype=np.int64),
            "added_at": now,
        },
    )
    store.append(
        "priorities",
        {
            "source": pa.array(np.array(["task0", "task1", "task2", "task3"], dtype=object)[rng.integers(0, 4, rows)], pa.string()),
            "sample_id": pa.array(np.arange(rows).astype(str), pa.string()),
            "priority": rng.gamma(2.0, 1.0, rows),
            "updated_at": now,
        },
        kind=Kind.PRIORITIES,
    )


def build_curriculum(store: replaystore.Store, rows: int, seed: int = 0) -> None:
    """`rows` scores of one metric with many ties, and the easy-to-hard ordering of them with a pacing."""
    values = np.random.default_rng(seed).integers(0, 500, rows).astype(np.float64)
    ids = pa.array(np.arange(rows).astype(str))
    one = lambda value: pa.array(np.full(rows, value, dtype=object), pa.string())  # noqa: E731
    store.append(
        "curriculum_scores",
        {"source": one("big"), "sample_id": ids, "metric": one("length"), "value": values, "percentile": percentiles(values), "scorer": one("bench")},
        kind=Kind.CURRICULUM_SCORES,
    )
    order = np.argsort(values, kind="stable")
    definition = OrderingDefinition(metric="length", pacing=SqrtPacing(0.1, 1000)).to_json()
    store.append(
        "curriculum_orderings",
        {
            "ordering": one("big-easy-first"), "source": one("big"), "sample_id": ids.take(pa.array(order)),
            "position": np.arange(rows, dtype=np.int64), "difficulty": percentiles(values)[order], "definition": one(definition),
        },
        kind=Kind.CURRICULUM_ORDERINGS,
    )  # fmt: skip


def _median_seconds(fn: Callable[[], object]) -> float:
    fn()  # warm: file handles, Polars' and DuckDB's first-call setup
    times = []
    for _ in range(REPEATS):
        with timer() as elapsed:
            fn()
        times.append(elapsed())
    return statistics.median(times)


def run(scale: float = 1.0) -> list[Result]:
    rows = max(10_000, int(ROWS * scale))
    page = rows // 2 // PAGE_ROWS
    with tempfile.TemporaryDirectory(prefix="bench_ui_") as tmp:
        store = replaystore.open(tmp)
        build(store, rows)
        build_curriculum(store, rows)
        client = TestClient(create_app(store))
        con = duckdb.connect()
        for name in store.table_names():
            con.register(name, store.dataset(name))

        def table_page() -> None:
            response = client.get(f"/table/exemplars?page={page}")
            assert response.status_code == 200 and response.text.count('class="thumb"') == PAGE_ROWS

        def priorities_page() -> None:
            response = client.get("/priorities")
            assert response.status_code == 200 and response.text.count('class="card source"') == 4

        def page_rows() -> None:
            con.sql(f"SELECT * FROM exemplars LIMIT {PAGE_ROWS} OFFSET {page * PAGE_ROWS}").to_arrow_table()

        def priority_summary() -> None:
            con.sql("SELECT source, COUNT(*), MIN(priority), MAX(priority), SUM(priority) FROM priorities GROUP BY source").to_arrow_table()
            for order in ("DESC", "ASC"):
                con.sql(f"SELECT * FROM priorities QUALIFY ROW_NUMBER() OVER (PARTITION BY source ORDER BY priority {order}) <= 10").to_arrow_table()

        def curriculum_page() -> None:
            response = client.get("/curriculum?ordering=big-easy-first")
            assert response.status_code == 200 and response.text.count("<polyline") == 3

        def curriculum_data() -> None:
            con.sql("SELECT difficulty FROM curriculum_orderings WHERE ordering = 'big-easy-first'").fetchnumpy()
            con.sql("SELECT value FROM curriculum_scores WHERE source = 'big'").fetchnumpy()
            con.sql("SELECT ordering, COUNT(*) FROM curriculum_orderings GROUP BY ordering").fetchall()

        results = []
        for case, ours, peer in [
            (f"table page (rows {page * PAGE_ROWS:,}+ of {rows:,} exemplars, {PAGE_ROWS} thumbnails)", table_page, page_rows),
            (f"priorities page ({rows:,} priorities, 4 sources)", priorities_page, priority_summary),
            (f"curriculum page ({rows:,}-sample ordering and scores)", curriculum_page, curriculum_data),
        ]:
            results.append(
                Result(
                    "ui", case, f"seconds per page (median of {REPEATS})", _median_seconds(ours), _median_seconds(peer),
                    "DuckDB fetching the page's data from the same Lance tables", higher_is_better=False, target="a page under 1 s",
                )
            )  # fmt: skip
        con.close()
    return results


if __name__ == "__main__":
    cli(run)
