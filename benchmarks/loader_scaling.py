"""`stream.loader(k workers)` beside the in-process stream, at several k, on the cores this process may use.

`python -m benchmarks.loader_scaling --scale 1.0 --workers 2,4,8` (prefix `taskset -c 0,1` to
hold it to two cores). The cases are `bench_streaming.loader_workers`'s, one run per k over the
same tables; the cores in the output are those the process may run on (`sched_getaffinity`),
not the machine's count. Prints a markdown table and, with `--out FILE`, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import replaystore
from benchmarks.bench_streaming import loader_workers, write_tables
from benchmarks.common import Result, format_results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader_scaling")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1,000,000 rows of 272 B")
    parser.add_argument("--workers", default="2,4", help="comma-separated worker counts")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    n = max(10_000, int(1_000_000 * args.scale))
    cores = len(os.sched_getaffinity(0))
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(folder)
        write_tables(store, n)
        for k in counts:
            results += loader_workers(store, n, workers=k)
    header = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {cores} usable cores of {os.cpu_count()}, Python {platform.python_version()}"
    print(header)
    print(format_results(results))
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": header, "scale": args.scale, "results": [r.as_dict() for r in results]}, indent=2))


if __name__ == "__main__":
    main()
