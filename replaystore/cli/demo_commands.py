"""`replaystore demo`: the end-to-end continual-learning run on the embedded default store."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from replaystore.cli.arguments import integer, output_file
from replaystore.cli.output import Done
from replaystore.cli.prefect_home import private_prefect_home
from replaystore.cli.stores import open_store
from replaystore.extras import require

# Checked before anything runs, so a missing one fails in a line, not minutes into the run.
DEMO_MODULES = ("tqdm", "sklearn", "matplotlib", "transformers", "ray.train", "prefect")


def demo(args: argparse.Namespace) -> Done:
    """The report for people; with --json, the results (results.json) and the files written."""
    with private_prefect_home():  # set before Prefect is imported: its settings are read then
        return _demo(args)


def _demo(args: argparse.Namespace) -> Done:
    for module in DEMO_MODULES:
        require(module, extra="demo", feature="replaystore demo")
    if not args.debug:  # a new local Ray turns token authentication on, and says so on stderr
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    from tqdm import tqdm

    from replaystore.cli.demo import DemoOptions, Plan, check, report, run_demo
    from replaystore.cli.demo.digits import TASKS

    options = DemoOptions(
        seed=args.seed, seeds=args.seeds, exemplars=args.budget, output=Path(args.output), small=args.small, full=args.full,
        tasks=args.tasks, text=not args.no_text,
    )  # fmt: skip
    check(options, 3 if args.small else len(TASKS))  # before the store, Ray or Prefect
    store = open_store(args, create=True)
    total = Plan.of(options).steps(options.text)
    with tqdm(desc="demo", unit="step", total=total, bar_format="{desc}: {n}/{total} steps, {elapsed} {postfix}") as bar:

        def log(message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(1)

        result = run_demo(store, options, log)
    files = "\n".join(f"  {f}" for f in result["files"])
    results = json.loads(Path(options.output, "results.json").read_text())
    return Done(f"{report.print_report(result['sections'])}\n\nwrote:\n{files}", {"results": results, "files": result["files"]})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the continual-learning demo end to end and report the results")
    p.add_argument("--seed", type=integer(0), default=0, help="the first seed (runs use seed, seed+1, …)")
    p.add_argument("--seeds", type=integer(1), default=None, help="how many seeds (default: 1, or 3 with --full)")
    p.add_argument("--budget", type=integer(1), default=200, help="exemplars kept (8×8 images); the byte budget is the model's bytes plus these")
    p.add_argument("--full", action="store_true", help="every ablation, 3 seeds and the GeRe weight sweep (about 30 minutes)")
    p.add_argument("--output", type=output_file, default="demo-output", help="folder for report.md, results.json and the PNG plots (its parent must exist)")
    p.add_argument("--small", action="store_true", help="a reduced run (3 tasks, fewer epochs and steps), for tests")
    p.add_argument("--tasks", type=integer(1), default=None, help="train only the first N digits tasks (default: all)")
    p.add_argument("--no-text", action="store_true", help="skip the GeRe text part")
    p.set_defaults(func=demo)
