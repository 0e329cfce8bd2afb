"""Run every benchmark at one scale; print the ratios; publish them.

`python -m benchmarks --scale 0.1 [--only herding,sql] [--out benchmarks/results] [--no-publish]`
Each `bench_<area>.py` module exposes `run(scale) -> list[Result]`; a module that fails is reported,
not hidden, and the others still run. The run's rows go to `--out` (results.json, results.md) and,
unless `--no-publish`, into `benchmarks/published.json` and the generated table of
docs/benchmarks.md (`benchmarks/publish.py`), each row with its command, commit, date and machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import time
import traceback
from pathlib import Path

import benchmarks
from benchmarks import publish
from benchmarks.common import Result, format_results


def discover() -> list[str]:
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = the sizes the issues name")
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. herding,sql (default: all)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--no-publish", action="store_true", help="leave benchmarks/published.json and docs/benchmarks.md alone")
    args = parser.parse_args()
    areas = [a for a in discover() if not args.only or a in args.only.split(",")]
    run = publish.current_run(args.scale)
    by_area: dict[str, list[Result]] = {}
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    for area in areas:
        start = time.perf_counter()
        print(f"== {area} (scale {args.scale})", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{area}")
            by_area[area] = module.run(args.scale)
            print(format_results(by_area[area]), flush=True)
        except Exception:  # one broken benchmark must not hide the others' figures
            failures[area] = traceback.format_exc(limit=3)
            print(f"FAILED: {failures[area]}", flush=True)
        timings[area] = round(time.perf_counter() - start, 1)
    results = [r for got in by_area.values() for r in got]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"{run.describe()}, scale {args.scale}."
    (out / "results.json").write_text(
        json.dumps({"run": run.__dict__, "seconds": timings, "failures": failures, "results": [r.as_dict() for r in results]}, indent=2)
    )
    (out / "results.md").write_text(f"{header}\n\n{format_results(results)}\n")
    print(f"\n{header}\n\n{format_results(results)}")
    if not args.no_publish:
        rows = publish.merge(publish.load(), run, by_area)
        publish.save(rows)
        publish.write_doc(publish.render(rows, failures, run))
        print(f"\npublished: {publish.RECORD.relative_to(publish.ROOT)}, {publish.DOC.relative_to(publish.ROOT)}")
    if failures:
        print(f"\nfailed: {', '.join(failures)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
