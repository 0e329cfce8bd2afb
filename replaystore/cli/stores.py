"""Open the store a command names: only commands that write may start a new one.

A mistyped `--uri` or `--table` must fail, not leave an empty store or table behind (readers
never write), so read commands refuse a local store folder or a table that is not there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import replaystore
from replaystore.errors import NotFoundError


def open_store(args: argparse.Namespace, create: bool = False) -> replaystore.Store:
    """The store of `--uri` (or `init URI`); unless `create`, a local one must exist already."""
    store = replaystore.open(getattr(args, "init_uri", None) or args.uri)
    if not create and store.is_local and not Path(store.uri).is_dir():
        raise NotFoundError(f"no store at {store.uri}: check --uri or $REPLAYSTORE_URI, or create it with 'replaystore init {store.uri}'")
    return store


def existing_table(store: replaystore.Store, table: str, option: str = "table") -> str:
    """`table` when the store has it; else one line naming it, the option and the tables there are."""
    if not store.exists(table):
        names = ", ".join(store.table_names()) or "none"
        raise NotFoundError(f"unknown table '{table}' in store {store.uri} (check {option}; tables: {names})")
    return table
