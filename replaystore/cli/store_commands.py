"""Store commands: init, migrate, tables, stats, versions, tag, restore, compact, cleanup.

Only `init`, `migrate` and the maintenance commands write, and only `init` starts a store; the
others only read (readers never write).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from replaystore import schemas
from replaystore.cli.arguments import integer, number
from replaystore.cli.output import Done
from replaystore.cli.stores import open_store


def init(args: argparse.Namespace) -> Done:
    """Create the store and one empty table per kind that is not there yet; migrate the others."""
    store = open_store(args, create=True)
    created = []
    for kind in schemas.known_kinds():
        if not store.exists(kind):
            store.create_table(kind)
            created.append(kind)
    migrated = [m.table for m in store.migrate().values() if m.schema_before != m.schema_after]
    message = (
        f"store {store.uri}\ntables created: {', '.join(created) or '(none, all present)'}\ntables migrated: {', '.join(migrated) or '(none, all current)'}"
    )
    return Done(message, {"store": store.uri, "created": created, "migrated": migrated})


def migrate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bring one table (or all) up to this replaystore's schema files; the only command that changes a schema."""
    return [
        {
            "table": m.table,
            "schema": f"v{m.schema_before}" if m.schema_before == m.schema_after else f"v{m.schema_before} -> v{m.schema_after}",
            "added columns": ", ".join(m.added),
            "version": m.version,
        }
        for m in open_store(args).migrate(args.table).values()
    ]


def tables(args: argparse.Namespace) -> list[dict[str, Any]]:
    store = open_store(args)
    return [asdict(store.info(name)) for name in store.table_names()]


def stats(args: argparse.Namespace) -> dict[str, Any]:
    return open_store(args).stats(args.table)


def versions(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{"version": v.version, "timestamp": v.timestamp, "rows": v.rows, "tags": ",".join(v.tags)} for v in open_store(args).versions(args.table)]


def tag(args: argparse.Namespace) -> Done:
    open_store(args).tag(args.table, args.version, args.name)
    return Done(f"tagged {args.table} version {args.version} as {args.name}", {"table": args.table, "version": args.version, "tag": args.name})


def restore(args: argparse.Namespace) -> Done:
    version: int | str = int(args.version) if args.version.isdigit() else args.version
    new = open_store(args).restore(args.table, version)
    return Done(
        f"restored {args.table} to version {args.version} as new version {new}",
        {"table": args.table, "version": new, "restored_from": version},
    )


def compact(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{"table": t, **m} for t, m in open_store(args).compact(args.table).items()]


def cleanup(args: argparse.Namespace) -> list[dict[str, Any]]:
    older = timedelta(hours=args.older_than_hours)
    return [{"table": t, **m} for t, m in open_store(args).cleanup(args.table, older_than=older).items()]


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
    p.add_argument("version", type=integer(0))
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
    p.add_argument("--older-than-hours", type=number(0), default=24 * 7, help="keep versions younger than this (default: 168)")
    p.set_defaults(func=cleanup)
