"""The index flow: schema migrations first (reads never migrate, so this scheduled maintenance does);
scalar indexes on the columns queries filter by (the fields schemas/*.json mark `"index"`), kept current as data arrives; experiences'
full-text and vector indexes; curriculum scores and orderings for a source.

A new scalar index is built once; later runs only add the rows appended since (`optimize_indices`),
so the hourly schedule costs little when nothing changed. Experiences get theirs from
`ExperienceMemory.build_index` (the vector index only once the table is large enough). Each index
build is one Lance commit, retried on conflicts with concurrent writers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, cast

from prefect import flow, get_run_logger
from pydantic import AfterValidator, Field

from replaystore.curriculum import OrderingDefinition, build_ordering
from replaystore.curriculum.orderings import ORDERINGS
from replaystore.curriculum.scoring import SCORES, SequenceLength, score, validate_metric
from replaystore.errors import ValidationError
from replaystore.flows.parameters import Name, StoreURI, Strict, TableNames, checked, open_store
from replaystore.flows.reporting import publish_summary, with_progress
from replaystore.flows.retries import store_task
from replaystore.flows.tables import existing_tables
from replaystore.retry import with_retries
from replaystore.schemas import Kind, known_kinds, load_spec
from replaystore.store import Store


def wanted_indexes(kind: str | None) -> dict[str, str]:
    """Column → scalar index type for a table of `kind`: the fields its schema file marks `"index"`.

    Experiences are left out: `ExperienceMemory.build_index` builds theirs (from the same file).
    Tables of no kind, or of a kind this replaystore has no file for, get none.
    """
    if kind is None or kind == Kind.EXPERIENCES or kind not in known_kinds():
        return {}
    return load_spec(kind).scalar_indexes


@store_task
def migrate(store: Store, tables: list[str]) -> list[dict[str, Any]]:
    """Add the columns newer schema files define to `tables` (nothing written for current ones)."""
    logger = get_run_logger()
    rows = []
    for table in tables:
        m = store.migrate(table)[table]
        if m.schema_before != m.schema_after:
            logger.info("%s: migrated schema v%d -> v%d (added %s)", table, m.schema_before, m.schema_after, ", ".join(m.added) or "no columns")
            rows.append({"table": table, "from": m.schema_before, "to": m.schema_after, "added": ", ".join(m.added)})
    return rows


def _ensure_index(store: Store, table: str, column: str, index_type: str) -> str:
    """Create the index on `column`, or add unindexed rows to it; returns what was done."""

    def write() -> str:
        ds = store.dataset(table)
        names = [d.name for d in ds.describe_indices() if list(d.field_names) == [column]]
        if not names:
            ds.create_scalar_index(column, cast(Any, index_type))  # a name from the contract (BTREE, BITMAP, ...)
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
    wanted = wanted_indexes(store.kind(table))
    if not wanted or store.count(table) == 0:
        logger.info("%s: no scalar indexes to build (%s)", table, "empty" if wanted else "no indexed columns")
        return []
    rows = []
    for column, index_type in wanted.items():
        action = _ensure_index(store, table, column, index_type)
        logger.info("%s.%s: %s %s index", table, column, action, index_type)
        rows.append({"table": table, "column": column, "index": index_type, "action": action})
    return rows


@store_task
def experience_indexes(store: Store, table: str, min_vector_rows: int | None) -> dict[str, Any]:
    """Scalar, full-text (when_to_use, content) and, once large enough, vector indexes of experiences."""
    from replaystore.experiences import ExperienceMemory

    memory = ExperienceMemory(store, table)
    report = memory.build_index() if min_vector_rows is None else memory.build_index(min_vector_rows=min_vector_rows)
    get_run_logger().info(
        "%s: indexed %d rows; full text on %s; vector index %s",
        table,
        report.rows,
        ", ".join(report.full_text),
        report.vector or f"skipped ({report.vector_skipped_reason})",
    )
    return {"table": table, "rows": report.rows, "full_text": ", ".join(report.full_text), "vector": report.vector or report.vector_skipped_reason}


class Curriculum(Strict):
    """Score a source by sequence length (no model needed on a schedule) and store its orderings."""

    source: Name
    column: str = "tokens"
    metric: Annotated[str, AfterValidator(validate_metric)] = "length"
    directions: list[Literal["easy_to_hard", "hard_to_easy", "random"]] = ["easy_to_hard"]


@store_task
def curriculum_scores(store: Store, spec: Curriculum) -> list[dict[str, Any]]:
    """Score `spec.source` under `spec.metric`, then (re)build one ordering per direction."""
    logger = get_run_logger()
    version = score(store, spec.source, spec.metric, SequenceLength(spec.column))
    rows = store.count(SCORES, filter=f"source = '{spec.source}' AND metric = '{spec.metric}'")
    logger.info("scored %d rows of %s by %s (%s version %d)", rows, spec.source, spec.metric, SCORES, version)
    out = [{"source": spec.source, "metric": spec.metric, "ordering": "(scores)", "rows": rows}]
    for direction in spec.directions:
        name = re.sub(r"[^A-Za-z0-9-]", "-", f"{spec.source}-{spec.metric}-{direction}")
        metric = None if direction == "random" else spec.metric
        build_ordering(store, name, spec.source, OrderingDefinition(direction=direction, metric=metric))
        count = store.count(ORDERINGS, filter=f"ordering = '{name}'")
        logger.info("ordering %s: %d rows", name, count)
        out.append({"source": spec.source, "metric": spec.metric, "ordering": name, "rows": count})
    return out


@flow(name="index", validate_parameters=False, log_prints=True)
@checked
def index(
    store_uri: StoreURI = None,
    tables: TableNames = None,
    min_vector_rows: Annotated[int | None, Field(ge=0)] = None,
    curriculum: Curriculum | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Build or refresh the indexes that queries and retrieval use; score and order `curriculum.source`."""
    store = open_store(store_uri)
    names = existing_tables(store, tables)
    if curriculum is not None:
        existing_tables(store, [curriculum.source])
        if curriculum.column not in store.schema(curriculum.source).names:
            raise ValidationError("curriculum.column", f"source '{curriculum.source}' has no column '{curriculum.column}'")
    migrated = migrate(store, names)
    indexed = [t for t in names if wanted_indexes(store.kind(t))]
    summary = {"scalar indexes": [row for table in with_progress(indexed, "scalar indexes") for row in scalar_indexes(store, table)]}
    if migrated:
        summary["migrations"] = migrated
    experience_tables = [t for t in names if store.kind(t) == Kind.EXPERIENCES]
    if experience_tables:
        summary["experiences"] = [experience_indexes(store, t, min_vector_rows) for t in experience_tables]
    if curriculum is not None:
        summary["curriculum"] = curriculum_scores(store, curriculum)
    publish_summary("index", f"indexes of {store.uri}", summary)
    return summary
