"""The prune flow: buffers back inside their rules, small fragments merged, old versions removed.

Every step is one or more whole Lance commits, so a run that fails part-way leaves each table at a
consistent version; a rerun picks up where it stopped. Cleanup goes through `Store.cleanup`, which
never deletes a tagged version, and pinned versions (`Store.pin`, used by streams) are tags.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger

from flows.parameters import Hours, Positive, StoreURI, TableNames, checked, open_store
from flows.reporting import publish_summary, with_progress
from flows.retries import store_task
from flows.tables import existing_tables
from replaystore import Store


@store_task
def compact_table(store: Store, table: str, target_rows_per_fragment: int) -> dict[str, Any]:
    """Merge the small fragments that every append leaves behind."""
    counts = store.compact(table, target_rows_per_fragment=target_rows_per_fragment)[table]
    get_run_logger().info(
        "compacted %s: %d fragments -> %d", table, counts["fragments_before"], counts["fragments_after"]
    )
    return {"table": table, **counts}


@store_task
def cleanup_table(store: Store, table: str, retention_hours: float) -> dict[str, Any]:
    """Remove versions older than the retention period; tagged and pinned ones stay."""
    kept = sorted(store.tags(table).items(), key=lambda item: item[1])
    stats = store.cleanup(table, older_than=timedelta(hours=retention_hours))[table]
    get_run_logger().info(
        "cleaned %s: removed %d versions, freed %d bytes, kept tagged %s",
        table,
        stats["versions_removed"],
        stats["bytes_removed"],
        ", ".join(f"{tag}@{version}" for tag, version in kept) or "(none)",
    )
    return {"table": table, **stats, "versions_left": len(store.versions(table)), "tags_kept": len(kept)}


@flow(name="prune", validate_parameters=False, log_prints=True)
@checked
def prune(
    store_uri: StoreURI = None,
    tables: TableNames = None,
    retention_hours: Hours = 24.0 * 7,
    compact: bool = True,
    target_rows_per_fragment: Positive = 1024 * 1024,
) -> dict[str, list[dict[str, Any]]]:
    """Prune buffers, compact fragments and clean up versions older than `retention_hours`."""
    store = open_store(store_uri)
    names = existing_tables(store, tables)
    summary: dict[str, list[dict[str, Any]]] = {}
    if compact:
        summary["compaction"] = [
            compact_table(store, table, target_rows_per_fragment) for table in with_progress(names, "compacting tables")
        ]
    summary["cleanup"] = [
        cleanup_table(store, table, retention_hours) for table in with_progress(names, "cleaning up old versions")
    ]
    publish_summary("prune", f"prune of {store.uri}", summary)
    return summary
