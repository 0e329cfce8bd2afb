"""Store commands: init, migrate, tables, stats, versions, tag, restore, compact, cleanup.

Only `init`, `migrate` and the maintenance commands write; the others only read (readers never write).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import replaystore
from replaystore import schemas


def _store(args: argparse.Namespace) -> replaystore.Store:
    return replaystore.open(getattr(args, "init_uri", None) or args.uri)


def init(args: argparse.Namespace) -> dict[str, Any]:
    """Create the store and one empty table per kind that is not there yet; migrate the others."""
    store = _store(args)
    created = []
    for kind in schemas.known_kinds():
        if not store.exists(kind):
            store.create_table(kind)
            created.append(kind)
    migrated = [m.table for m in store.migrate().values() if m.schema_before != m.schema_after]
    return {
        "store": store.uri,
        "tables created": ", ".join(created) or "(none, all present)",
        "tables migrated": ", ".join(migrated) or "(none, all current)",
    }


def migrate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bring one table (or all) up to this replaystore's schema files; the only command that changes a schema."""
    return [
        {
            "table": m.table,
            "schema": f"v{m.schema_before}" if m.schema_before == m.schema_after else f"v{m.schema_before} -> v{m.schema_after}",
            "added columns": ", ".join(m.added),
            "version": m.version,
        }
        for m in _store(args).migrate(args.table).values()
    ]


def tables(args: argparse.Namespace) -> list[dict[str, Any]]:
    store = _store(args)
    return [asdict(store.info(name)) for name in store.table_names()]


def stats(args: argparse.Namespace) -> dict[str, Any]:
    return _store(args).stats(args.table)


def versions(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {"version": v.version, "timestamp": v.timestamp, "rows": v.rows, "tags": ",".join(v.tags)}
        for v in _store(args).versions(args.table)
    ]


def tag(args: argparse.Namespace) -> str:
    _store(args).tag(args.table, args.version, args.name)
    return f"tagged {args.table} version {args.version} as {args.name}"


def restore(args: argparse.Namespace) -> str:
    version: int | str = int(args.version) if args.version.isdigit() else args.version
    new = _store(args).restore(args.table, version)
    return f"restored {args.table} to version {args.version} as new version {new}"


def compact(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{"table": t, **m} for t, m in _store(args).compact(args.table).items()]


def cleanup(args: argparse.Namespace) -> list[dict[str, Any]]:
    older = timedelta(hours=args.older_than_hours)
    return [{"table": t, **m} for t, m in _store(args).cleanup(args.table, older_than=older).items()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create the store and its empty tables")
    p.add_argument("init_uri", nargs="?", metavar="URI", help="store URI (default: --uri, $REPLAYSTORE_URI, ./replaystore-data)")
    p.set_defaults(func=init)
    p = sub.add_parser("migrate", help="add the columns newer schema files define to one table or all (reads never do)")
    p.add_argument("table", nargs="?")
    p.set_defaults(func=migrate)
    sub.add_parser("tables", help="list tables: name, kind, rows, bytes, version").set_defaults(func=tables)
    p = sub.add_parser("stats", help="rows, bytes, fragments, versions, tags and columns of a table")
    p.add_argument("table")
    p.set_defaults(func=stats)
    p = sub.add_parser("versions", help="list the versions of a table")
    p.add_argument("table")
    p.set_defaults(func=versions)
    p = sub.add_parser("tag", help="name a version so cleanup keeps it")
    p.add_argument("table")
    p.add_argument("version", type=int)
    p.add_argument("name")
    p.set_defaults(func=tag)
    p = sub.add_parser("restore", help="make an earlier version (number or tag) the latest, as a new version")
    p.add_argument("table")
    p.add_argument("version")
    p.set_defaults(func=restore)
    p = sub.add_parser("compact", help="merge small fragments of one table or all")
    p.add_argument("table", nargs="?")
    p.set_defaults(func=compact)
    p = sub.add_parser("cleanup", help="delete old untagged versions")
    p.add_argument("table", nargs="?")
    p.add_argument("--older-than-hours", type=float, default=24 * 7)
    p.set_defaults(func=cleanup)
