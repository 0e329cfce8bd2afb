"""The Store page (every table at a glance) and the Table page (history, contract, a page of rows).

Everything comes from Lance manifests (row counts, sizes, tags) and one limited, projected scan:
a page of a table with a million rows reads `PAGE_ROWS` rows, never the table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from replaystore import schemas
from replaystore.store import PIN_PREFIX, Store, Version
from replaystore.ui import cells

PAGE_ROWS = 50
HISTORY = 60  # most recent versions listed on a table page


def _utc(value: Any) -> datetime:
    """A version's timestamp (Lance gives naive UTC datetimes) as an aware one."""
    stamp = cast(datetime, value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def overview(store: Store) -> list[dict[str, Any]]:
    """One row per table: kind, rows, bytes, fragments, versions, tags, live pins, last write."""
    out = []
    for name in store.table_names():
        ds = store.dataset(name)
        versions = ds.versions()
        tags = store.tags(name)
        latest = versions[-1]
        written = _utc(latest["timestamp"])
        out.append(
            {
                "name": name,
                "kind": schemas.kind_of(ds.schema),
                "rows": ds.count_rows(),
                "bytes": int(latest.get("metadata", {}).get("total_files_size", 0)),
                "fragments": len(ds.get_fragments()),
                "version": ds.version,
                "versions": len(versions),
                "tags": sorted(t for t in tags if not t.startswith(PIN_PREFIX)),
                "pins": sum(t.startswith(PIN_PREFIX) for t in tags),
                "last_write": f"{written:%Y-%m-%d %H:%M:%S} UTC",
            }
        )
    return out


def history(store: Store, name: str) -> list[dict[str, Any]]:
    """The latest `HISTORY` versions, newest first, with rows written and deleted by each.

    From each manifest's cumulative counters: rows written = growth of the rows in data files,
    rows deleted = written − net change. A compaction rewrites files and shows neither.
    """
    ds = store.dataset(name)
    by_version: dict[int, list[str]] = {}
    for tag, version in store.tags(name).items():
        by_version.setdefault(version, []).append(tag)
    out = []
    previous = {"rows": 0, "files": 0}
    for v in ds.versions():
        meta = v.get("metadata", {})
        rows, files = int(meta.get("total_rows", 0)), int(meta.get("total_data_file_rows", 0))
        written = max(files - previous["files"], 0)
        stamp = _utc(v["timestamp"])
        out.append(
            {
                "version": int(v["version"]),
                "time": f"{stamp:%Y-%m-%d %H:%M:%S}",
                "rows": rows,
                "written": written,
                "deleted": max(written - (rows - previous["rows"]), 0),
                "tags": sorted(by_version.get(int(v["version"]), [])),
            }
        )
        previous = {"rows": rows, "files": files}
    return out[::-1][:HISTORY]


def contract(store: Store, name: str) -> dict[str, Any]:
    """The table's kind, its description and each column's type and description (from the schema file
    when the table has a kind, else from the stored field metadata)."""
    schema = store.schema(name)
    kind = schemas.kind_of(schema)
    spec = schemas.load_spec(kind) if kind in schemas.known_kinds() else None
    described = {f.name: f for f in spec.fields} if spec else {}
    columns = []
    for field in schema:
        stored = (field.metadata or {}).get(b"description", b"").decode()
        known = described.get(field.name)
        columns.append(
            {
                "name": field.name,
                "type": str(field.type),
                "nullable": field.nullable,
                "description": known.description if known else stored,
            }
        )
    return {"kind": kind, "description": spec.description if spec else "", "columns": columns}


def page(store: Store, name: str, number: int, version: Version | None = None) -> dict[str, Any]:
    """Rows `number·PAGE_ROWS` … of `name` (as of `version`), rendered cell by cell."""
    ds = store.dataset(name, version)
    total = ds.count_rows()
    table = ds.to_table(limit=PAGE_ROWS, offset=number * PAGE_ROWS)
    return {
        "columns": table.column_names,
        "rows": cells.rows(table),
        "total": total,
        "number": number,
        "pages": max(1, -(-total // PAGE_ROWS)),
        "version": ds.version,
    }
