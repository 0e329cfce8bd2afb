"""`replaystore serve`: run every deployment of deploy/prefect.yaml on its schedule, in this process.

Prefect is imported only when the command runs (through `replaystore.flows`), so the library and
every other command start without it; without the `flows` extra the command says so in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replaystore.cli.arguments import input_file, integer
from replaystore.cli.output import Done
from replaystore.cli.prefect_home import private_prefect_home
from replaystore.cli.stores import open_store


def serve(args: argparse.Namespace) -> Done:
    """Serve the flows against the local store until Ctrl-C (Prefect pauses the schedules on exit)."""
    with private_prefect_home():  # set before Prefect is imported: without PREFECT_API_URL the local server's database is this run's own
        from replaystore.flows.deployments import PREFECT_FILE, serve_all  # a missing `flows` extra is named first

        store = open_store(args)
        served = serve_all(store.uri, Path(args.prefect_file) if args.prefect_file else PREFECT_FILE, args.limit)
    return Done(f"stopped serving {', '.join(served)} for {store.uri}", {"store": store.uri, "served": served})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the distill/index/prune/stream flows with their schedules (Ctrl-C stops)")
    p.add_argument("--prefect-file", type=input_file, default=None, help="deployments to serve (default: deploy/prefect.yaml, shipped with replaystore)")
    p.add_argument("--limit", type=integer(1), default=None, help="most flow runs at once (default: no limit)")
    p.set_defaults(func=serve)
