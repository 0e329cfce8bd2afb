"""The prune flow: buffers back inside their rules, small fragments merged, old versions removed.

Exemplar buffers are cut back inside their byte budgets (`ExemplarBuffer.rebalance`, lowest-ranked
rows first) and reported (`budget()`); experiences retrieved often but rarely helpful are archived
by ReMe's utility rule (`ExperienceMemory.refine`; near-duplicates never get in, `add` skips them).

Every step is one or more whole Lance commits, so a run that fails part-way leaves each table at a
consistent version; a rerun picks up where it stopped. Cleanup goes through `Store.cleanup`, which
never deletes a tagged version, and pinned versions (`Store.pin`, used by streams) are tags.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger

from replaystore.flows.parameters import Hours, NonNegative, Positive, StoreURI, TableNames, checked, open_store
from replaystore.flows.reporting import publish_summary, with_progress
from replaystore.flows.retries import store_task
from replaystore.flows.tables import exemplar_buffers, existing_tables
from replaystore.schemas import Kind
from replaystore.store import Store


@store_task
def rebalance_buffer(store: Store, buffer: str) -> dict[str, Any]:
    """Cut one exemplar buffer back inside its policy and byte budget; report where its bytes go."""
    from replaystore.exemplars import ExemplarBuffer  # torch loads only for this task

    exemplars = ExemplarBuffer.open(store, buffer)
    change = exemplars.rebalance()
    report = exemplars.budget()
    get_run_logger().info(
        "rebalanced %s: cut %d rows (%s), freed %d bytes; %s of %s bytes used, %s free",
        buffer,
        change.rows_cut,
        change.cut or "none",
        change.bytes_freed,
        report["model_bytes"] + report["exemplar_bytes"],
        report["total_bytes"],
        report["free_bytes"],
    )
    budget = {k: report[k] for k in ("total_bytes", "model_bytes", "exemplar_bytes", "free_bytes", "rows")}
    return {"buffer": buffer, "rows_cut": change.rows_cut, "bytes_freed": change.bytes_freed, **budget}


@store_task
def refine_experiences(store: Store, table: str, freq_threshold: int, utility_threshold: float) -> dict[str, Any]:
    """Archive experiences with freq >= threshold and utility/freq below the threshold."""
    from replaystore.experiences import ExperienceMemory

    archived = ExperienceMemory(store, table).refine(freq_threshold, utility_threshold)
    get_run_logger().info("refined %s: archived %d experiences (freq >= %d, utility/freq < %g)", table, archived.num_rows, freq_threshold, utility_threshold)
    return {"table": table, "archived": archived.num_rows, "active": store.count(table, filter="status = 'active'")}


@store_task
def compact_table(store: Store, table: str, target_rows_per_fragment: int) -> dict[str, Any]:
    """Merge the small fragments that every append leaves behind."""
    counts = store.compact(table, target_rows_per_fragment=target_rows_per_fragment)[table]
    get_run_logger().info("compacted %s: %d fragments -> %d", table, counts["fragments_before"], counts["fragments_after"])
    return {"table": table, **counts}


@store_task
def cleanup_table(store: Store, table: str, retention_hours: float) -> dict[str, Any]:
    """Remove versions older than the retention period; tagged and pinned ones stay (pins older than
    two days, left by readers that died mid-epoch, are dropped first)."""
    kept = sorted(store.tags(table).items(), key=lambda item: item[1])
    stats = store.cleanup(table, older_than=timedelta(hours=retention_hours))[table]
    get_run_logger().info(
        "cleaned %s: removed %d versions, freed %d bytes, dropped %d stale pins, kept tagged %s",
        table,
        stats["versions_removed"],
        stats["bytes_removed"],
        stats["stale_pins_removed"],
        ", ".join(f"{tag}@{version}" for tag, version in kept) or "(none)",
    )
    return {"table": table, **stats, "versions_left": len(store.versions(table)), "tags_kept": len(kept)}


@flow(name="prune", validate_parameters=False, log_prints=True)
@checked
def prune(
    store_uri: StoreURI = None,
    tables: TableNames = None,
    buffers: TableNames = None,
    freq_threshold: Positive = 5,
    utility_threshold: NonNegative = 0.5,
    retention_hours: Hours = 24.0 * 7,
    compact: bool = True,
    target_rows_per_fragment: Positive = 1024 * 1024,
) -> dict[str, list[dict[str, Any]]]:
    """Prune buffers, compact fragments and clean up versions older than `retention_hours`.

    `buffers` and `tables` default to all; experiences tables are refined by the utility rule.
    """
    store = open_store(store_uri)
    names = existing_tables(store, tables)
    buffer_names = exemplar_buffers(store, buffers)
    summary: dict[str, list[dict[str, Any]]] = {}
    if buffer_names:
        summary["exemplar budgets"] = [rebalance_buffer(store, b) for b in with_progress(buffer_names, "rebalancing buffers")]
    experience_tables = [t for t in names if store.kind(t) == Kind.EXPERIENCES]
    if experience_tables:
        summary["experiences"] = [refine_experiences(store, t, freq_threshold, utility_threshold) for t in experience_tables]
    if compact:
        summary["compaction"] = [compact_table(store, table, target_rows_per_fragment) for table in with_progress(names, "compacting tables")]
    summary["cleanup"] = [cleanup_table(store, table, retention_hours) for table in with_progress(names, "cleaning up old versions")]
    publish_summary("prune", f"prune of {store.uri}", summary)
    return summary
