"""Which tables a flow works on: the ones named (each must exist), else every table of the kinds asked."""

from __future__ import annotations

from typing import Iterable

from replaystore import Store
from replaystore.errors import NotFoundError


def existing_tables(store: Store, names: list[str] | None, kinds: Iterable[str] | None = None) -> list[str]:
    """Named tables (refusing unknown ones before any work), or all tables of `kinds` (all if None)."""
    if names:
        missing = [name for name in names if not store.exists(name)]
        if missing:
            raise NotFoundError(f"unknown table(s) {', '.join(missing)} in store {store.uri}")
        return list(names)
    wanted = set(kinds) if kinds is not None else None
    return [name for name in store.table_names() if wanted is None or store.kind(name) in wanted]
