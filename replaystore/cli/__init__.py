"""The `replaystore` command: one sub-command module per area, discovered by name.

Each `*_commands.py` module in this package exposes `register(subparsers)`; its handlers take
the parsed args and return rows (list of dicts), a mapping, or a message, which `output` prints
as a human table or, with `--json`, as JSON. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from replaystore.cli.output import emit, fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replaystore", description="Replay memory for continual learning, in one Lance store.")
    parser.add_argument("--uri", default=None, help="store URI (default: $REPLAYSTORE_URI or ./replaystore-data)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_commands")):
        importlib.import_module(f"{__name__}.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", args.debug, code=130)
    except Exception as exc:  # one line for people, the traceback with --debug
        return fail(f"{type(exc).__name__}: {exc}", args.debug)
    emit(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
