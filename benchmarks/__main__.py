"""Run every benchmark at one scale; print the ratios; write JSON and a markdown table.

`python -m benchmarks --scale 0.1 [--only herding,sql] [--out benchmarks/results]`
Each `bench_<area>.py` module exposes `run(scale) -> list[Result]`; a module that fails is reported,
not hidden, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import benchmarks
from benchmarks.common import Result, format_results, machine


def discover() -> list[str]:
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = the sizes the issues name")
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. herding,sql (default: all)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    areas = [a for a in discover() if not args.only or a in args.only.split(",")]
    results: list[Result] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    for area in areas:
        start = time.perf_counter()
        print(f"== {area} (scale {args.scale})", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{area}")
            got = module.run(args.scale)
            results.extend(got)
            print(format_results(got), flush=True)
        except Exception:  # one broken benchmark must not hide the others' figures
            failures[area] = traceback.format_exc(limit=3)
            print(f"FAILED: {failures[area]}", flush=True)
        timings[area] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"Measured {stamp} on {machine()}, scale {args.scale}."
    (out / "results.json").write_text(
        json.dumps({"when": stamp, "machine": machine(), "scale": args.scale, "seconds": timings,
                    "failures": failures, "results": [r.as_dict() for r in results]}, indent=2)
    )
    (out / "results.md").write_text(f"{header}\n\n{format_results(results)}\n")
    print(f"\n{header}\n\n{format_results(results)}")
    if failures:
        print(f"\nfailed: {', '.join(failures)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
