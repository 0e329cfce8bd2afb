"""The `replaystore` command: one sub-command module per area, discovered by name.

Each `*_commands.py` module in this package exposes `register(subparsers)`; its handlers take
the parsed args and return rows (list of dicts), a mapping, a `Done` or a message, which `output`
prints as a human table or, with `--json`, as JSON. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from replaystore.cli.output import emit, fail

# Set unless --debug, before any library that reads them is imported: a command's stderr holds its own messages.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "RAY_DEDUP_LOGS": "0",
}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the argument, the rule, and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--uri, --json and --debug; below the top level they default to nothing, so the top's value stands."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--uri", help="store URI (default: $REPLAYSTORE_URI or ./replaystore-data)", **({"default": None} if top else default))
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables", **default)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs", **default)


def _share_global_options(parser: argparse.ArgumentParser) -> None:
    """Let every sub-command take the global options after its name too (`replaystore tables --json`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _global_options(sub, top=False)
                _share_global_options(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="replaystore", description="Replay memory for continual learning, in one Lance store.")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_commands")):
        importlib.import_module(f"{__name__}.{module}").register(sub)
    _share_global_options(parser)
    return parser


def _quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    transformers = sys.modules.get("transformers")
    if transformers is not None:  # imported before main() ran (in-process callers): its bar setting is read at import
        transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet()
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
