"""Argument types for the command line: ranges and output paths checked by the parser itself.

A bad value stops at parsing, before a store is opened or anything slow starts, with argparse's
one line `argument --limit: must be an integer ≥ 1, got '0'`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def integer(minimum: int) -> Callable[[str], int]:
    """An int of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {text!r}")
        return value

    return parse


def port(text: str) -> int:
    """A TCP port a server can listen on."""
    value = integer(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number between 1 and 65535, got {text!r}")
    return value


def number(low: float, high: float = math.inf) -> Callable[[str], float]:
    """A finite float in [low, high]."""
    rule = f"a number ≥ {low:g}" if math.isinf(high) else f"a number in [{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse


def output_file(text: str) -> str:
    """A file to write whose folder exists: commands never create folders for their output."""
    folder = Path(text).expanduser().absolute().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist: create it first or write elsewhere")
    return text


def input_file(text: str) -> str:
    """A file to read that exists."""
    if not Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}: check the path")
    return text
