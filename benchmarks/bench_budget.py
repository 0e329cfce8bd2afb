"""What cross-machine safety costs a budgeted commit, beside the one-machine file lock it replaced.

Both sides make the same change to an exemplar table of 40 classes × 20 rows of 8×8 images with
64-d features: insert 20 rows of a new class and cut the 10 lowest-ranked rows of an old one, as one
version. Ours: `Store.atomically` (plan on the latest version, commit onto it or not at all: safe
for writers that share only the store URI). Peer: the path replaystore used before, a file lock
(`fcntl`, one machine only) around the same read and a Lance `merge_insert` with
`when_not_matched_by_source_delete`. Measured on local disk and on moto's S3 server on 127.0.0.1
(one process, no contention: the fixed cost per commit).
"""

from __future__ import annotations

import logging
import shutil
import socket
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

import replaystore
from benchmarks.common import Result, cli, timer
from replaystore.store import Edit

CLASSES, PER_CLASS, DIM = 40, 20, 64


def _rows(class_id: int, n: int) -> pa.Table:
    rng = np.random.default_rng(class_id)
    return pa.table(
        {
            "buffer": ["bench"] * n,
            "sample_id": np.arange(n, dtype=np.int64) + 1000 * class_id,
            "class_id": np.full(n, class_id, dtype=np.int64),
            "task_id": np.zeros(n, dtype=np.int64),
            "data": [rng.integers(0, 255, 64, dtype=np.uint8).tobytes() for _ in range(n)],
            "shape": [[8, 8]] * n,
            "dtype": ["uint8"] * n,
            "features": list(rng.standard_normal((n, DIM), dtype=np.float32)),
            "rank": np.arange(1, n + 1, dtype=np.int32),
            "nbytes": np.full(n, 64, dtype=np.int64),
        }
    )


def _fill(store: replaystore.Store, name: str) -> None:
    store.create_table(name, "exemplars")
    store.append(name, pa.concat_tables([_rows(c, PER_CLASS) for c in range(CLASSES)]))


def _ours(store: replaystore.Store, name: str, step: int) -> None:
    def plan(ds: lance.LanceDataset) -> tuple[Edit, int]:
        ds.count_rows()  # the read a budget check makes
        return Edit(delete=f"class_id = {step} AND rank > 10", insert=_rows(CLASSES + step, PER_CLASS)), 0

    store.atomically(name, plan)


def _locked_merge(store: replaystore.Store, name: str, step: int) -> None:
    with store.lock(name):
        store.dataset(name).count_rows()
        store.merge(name, _rows(CLASSES + step, PER_CLASS), on=["class_id", "sample_id"], delete_unmatched=f"class_id = {step} AND rank > 10")


def _median_ms(store: replaystore.Store, name: str, change: Callable[[replaystore.Store, str, int], None], commits: int) -> float:
    _fill(store, name)
    times = []
    for step in range(commits):
        with timer() as elapsed:
            change(store, name, step)
        times.append(elapsed())
    return 1000 * statistics.median(times)


def _compare(store: replaystore.Store, where: str, commits: int) -> Result:
    ours = _median_ms(store, "ours", _ours, commits)
    peer = _median_ms(store, "peer", _locked_merge, commits)
    return Result(
        "budget",
        f"budgeted commit on {where} (insert 20, cut 10)",
        "ms per commit",
        ours,
        peer,
        "file lock (one machine) + Lance merge_insert",
        higher_is_better=False,
        target="the price of cross-machine safety",
        notes=f"median of {commits} commits each",
    )


def run(scale: float = 1.0) -> list[Result]:
    commits = max(10, int(40 * scale))
    root = Path(tempfile.mkdtemp(prefix="bench_budget_"))
    results = []
    try:
        results.append(_compare(replaystore.open(str(root / "store")), "local disk", commits))
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:  # moto comes with the dev extra
            return results
        import boto3

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket="bench")
            options = {"aws_endpoint": endpoint, "allow_http": "true", "region": "us-east-1", **keys}
            results.append(_compare(replaystore.open("s3://bench/store", options), "S3 (moto, loopback)", commits))
        finally:
            server.stop()
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    cli(run)
