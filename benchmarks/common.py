"""What every benchmark returns: our figure beside the named peer's, measured in the same run.

Each `benchmarks/bench_<area>.py` exposes `run(scale: float = 1.0) -> list[Result]`, where scale 1.0
is the size its issue names, and runs standalone with `python -m benchmarks.bench_<area> --scale S`.
The harness (`python -m benchmarks`) collects every module's results.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class Result:
    benchmark: str
    case: str
    metric: str
    ours: float
    peer: float | None
    peer_name: str
    higher_is_better: bool
    target: str = ""
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better we are than the peer (>1 means better), whatever the metric's direction."""
        if self.peer is None or self.peer == 0 or self.ours == 0:
            return None
        return self.ours / self.peer if self.higher_is_better else self.peer / self.ours

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def format_results(results: list[Result]) -> str:
    """A markdown table of results with ratios."""
    lines = [
        "| benchmark | case | metric | ours | peer | peer value | ratio (×, >1 better) | target |",
        "|---|---|---|---:|---|---:|---:|---|",
    ]
    for r in results:
        peer = "" if r.peer is None else f"{r.peer:.4g}"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.benchmark} | {r.case} | {r.metric} | {r.ours:.4g} | {r.peer_name} | {peer} | {ratio} | {r.target} |")
    return "\n".join(lines)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed: ...; elapsed()` gives seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


@contextmanager
def peak_python_memory() -> Iterator[Callable[[], int]]:
    """Peak bytes allocated through Python's allocators (numpy included) inside the block."""
    tracemalloc.start()
    peak: list[int] = []
    try:
        yield lambda: peak[0] if peak else tracemalloc.get_traced_memory()[1]
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def cli(run: Callable[[float], list[Result]]) -> None:
    """Standalone entry point for one benchmark module."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = the size the issue names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.scale)
    print(json.dumps([r.as_dict() for r in results], indent=2) if args.json else format_results(results))
