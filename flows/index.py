"""The index flow: scalar indexes on the columns queries filter by, kept current as data arrives.

A new index is built once; later runs only add the rows appended since (`optimize_indices`), so the
hourly schedule costs little when nothing changed. Each index build is one Lance commit, retried on
conflicts with concurrent writers.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.parameters import StoreURI, TableNames, checked, open_store
from flows.reporting import publish_summary, with_progress
from flows.retries import store_task
from flows.tables import existing_tables
from replaystore import Store
from replaystore.retry import with_retries

IndexType = Literal["BTREE", "BITMAP"]

# Per table kind, the columns that reads filter or join by: ids get a BTREE (many distinct values),
# classes, tasks, workspaces and other labels a BITMAP (few distinct values).
SCALAR_INDEXES: dict[str, dict[str, IndexType]] = {
    "exemplars": {"sample_id": "BTREE", "class_id": "BITMAP", "task_id": "BITMAP", "buffer": "BITMAP"},
    "experiences": {"experience_id": "BTREE", "workspace": "BITMAP", "kind": "BITMAP", "status": "BITMAP"},
    "general_samples": {"sample_id": "BTREE", "source": "BITMAP", "content_hash": "BTREE"},
    "activation_states": {"sample_id": "BTREE", "model_fingerprint": "BITMAP", "layer": "BITMAP"},
    "curriculum_scores": {"sample_id": "BTREE", "source": "BITMAP", "metric": "BITMAP"},
    "curriculum_orderings": {"sample_id": "BTREE", "ordering": "BITMAP", "source": "BITMAP"},
    "priorities": {"sample_id": "BTREE", "source": "BITMAP"},
}


def _ensure_index(store: Store, table: str, column: str, index_type: IndexType) -> str:
    """Create the index on `column`, or add unindexed rows to it; returns what was done."""

    def write() -> str:
        ds = store.dataset(table)
        names = [d.name for d in ds.describe_indices() if list(d.field_names) == [column]]
        if not names:
            ds.create_scalar_index(column, index_type)
            return "created"
        if ds.stats.index_stats(names[0])["num_unindexed_rows"] == 0:
            return "current"
        ds.optimize.optimize_indices(index_names=names)
        return "updated"

    return with_retries(write)


@store_task
def scalar_indexes(store: Store, table: str) -> list[dict[str, Any]]:
    """Bring every scalar index of `table`'s kind up to date (nothing to do on an empty table)."""
    logger = get_run_logger()
    wanted = SCALAR_INDEXES.get(store.kind(table) or "", {})
    if not wanted or store.count(table) == 0:
        logger.info("%s: no scalar indexes to build (%s)", table, "empty" if wanted else "no indexed columns")
        return []
    rows = []
    for column, index_type in wanted.items():
        action = _ensure_index(store, table, column, index_type)
        logger.info("%s.%s: %s %s index", table, column, action, index_type)
        rows.append({"table": table, "column": column, "index": index_type, "action": action})
    return rows


@flow(name="index", validate_parameters=False, log_prints=True)
@checked
def index(store_uri: StoreURI = None, tables: TableNames = None) -> dict[str, list[dict[str, Any]]]:
    """Build or refresh the indexes that queries and retrieval use."""
    store = open_store(store_uri)
    names = existing_tables(store, tables, SCALAR_INDEXES)
    summary = {
        "scalar indexes": [row for table in with_progress(names, "scalar indexes") for row in scalar_indexes(store, table)]
    }
    publish_summary("index", f"indexes of {store.uri}", summary)
    return summary
