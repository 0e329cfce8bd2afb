"""Which tables and buffers a flow works on: the ones named (each must exist, checked before any
work), else every one the store has of the kinds asked."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from replaystore.errors import NotFoundError
from replaystore.store import Store


def _named(names: list[str], known: Collection[str], what: str, uri: str) -> list[str]:
    missing = [name for name in names if name not in known]
    if missing:
        raise NotFoundError(f"unknown {what} {', '.join(missing)} in store {uri}")
    return list(names)


def existing_tables(store: Store, names: list[str] | None, kinds: Iterable[str] | None = None) -> list[str]:
    """Named tables, or all tables of `kinds` (all tables if None)."""
    every = store.table_names()
    if names:
        return _named(names, every, "table(s)", store.uri)
    wanted = set(kinds) if kinds is not None else None
    return [name for name in every if wanted is None or store.kind(name) in wanted]


def exemplar_buffers(store: Store, names: list[str] | None) -> list[str]:
    """Named exemplar buffers, or every buffer the store holds settings for."""
    from replaystore.exemplars.settings import SETTINGS_TABLE  # torch loads only when buffers are pruned

    known = store.read(SETTINGS_TABLE, columns=["buffer"])["buffer"].to_pylist() if store.exists(SETTINGS_TABLE) else []
    return _named(names, known, "exemplar buffer(s)", store.uri) if names else sorted(known)
