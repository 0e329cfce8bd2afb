"""`replaystore budget [BUFFER]`: where an exemplar buffer's bytes go (model, exemplars, free, on disk)."""

from __future__ import annotations

import argparse
from typing import Any

from replaystore.cli.stores import open_store

_SUMMARY = ("buffer", "total_bytes", "model_bytes", "exemplar_bytes", "free_bytes", "rows", "disk_bytes")


def budget(args: argparse.Namespace) -> dict[str, Any] | list[dict[str, Any]]:
    """One buffer's full report, or a summary line per buffer when none is named."""
    from replaystore.exemplars import ExemplarBuffer  # torch loads only for this command

    store = open_store(args)
    if args.buffer:
        return store.exemplars(args.buffer).budget()
    return [{k: v for k, v in store.exemplars(name).budget().items() if k in _SUMMARY} for name in ExemplarBuffer.names(store)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budget", help="an exemplar buffer's byte budget: total, model, exemplars, free, per class, on disk")
    p.add_argument("buffer", nargs="?", help="buffer name (default: one summary line per buffer)")
    p.set_defaults(func=budget)
