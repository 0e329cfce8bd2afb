"""ReMe task-memory JSONL dumps in and out, so existing ReMe memories move between the two.

One JSON object per line: `workspace_id, memory_id, memory_type ("task"), when_to_use, content,
score, time_created, time_modified ("%Y-%m-%d %H:%M:%S"), author, metadata`. Our columns that
ReMe keeps inside `metadata` (freq, utility, tags, confidence, kind, status, source_ids) go there
on export and come back out on import; other metadata keys are kept as our `metadata` JSON.
Embeddings are not in the dump: import embeds with the memory's embedder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from replaystore.errors import ValidationError
from replaystore.predicates import in_list, literal

if TYPE_CHECKING:
    from replaystore.experiences.memory import ExperienceMemory

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LIFTED = ("freq", "utility", "tags", "confidence", "kind", "status", "source_ids")


def _time(value: Any, field: str, line: int) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValidationError(field, f"line {line}: {value!r} is not a '{TIME_FORMAT}' time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_reme(record: Any, line: int, workspace: str | None = None) -> dict[str, Any]:
    """One ReMe memory dict → one experiences row (without embeddings)."""
    if not isinstance(record, dict):
        raise ValidationError("line", f"line {line}: expected a JSON object, got {type(record).__name__}")
    if record.get("memory_type", "task") != "task":
        raise ValidationError("memory_type", f"line {line}: only ReMe task memories import, got {record['memory_type']!r}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", f"line {line}: must be a JSON object")
    metadata = dict(metadata)
    lifted = {k: metadata.pop(k) for k in LIFTED if k in metadata}
    for key in ("workspace_id", "memory_id"):
        if not isinstance(record.get(key), str) or not record[key]:
            if key == "workspace_id" and workspace:
                continue
            raise ValidationError(key, f"line {line}: must be a non-empty string")
    row: dict[str, Any] = {
        "experience_id": record["memory_id"],
        "workspace": workspace or record["workspace_id"],
        "when_to_use": record.get("when_to_use", ""),
        "content": record.get("content", ""),
        "score": record.get("score"),
        "author": record.get("author") or None,
        "metadata": json.dumps(metadata, sort_keys=True) if metadata else None,
        "kind": lifted.get("kind", "insight"),
        **{k: lifted[k] for k in ("freq", "utility", "tags", "confidence", "status", "source_ids") if k in lifted},
    }
    for ours, theirs in (("created_at", "time_created"), ("updated_at", "time_modified")):
        if (when := _time(record.get(theirs), theirs, line)) is not None:
            row[ours] = when
    return row


def to_reme(row: dict[str, Any]) -> dict[str, Any]:
    """One experiences row → one ReMe memory dict."""
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    metadata.update({k: row[k] for k in LIFTED if row.get(k) is not None})
    return {
        "workspace_id": row["workspace"],
        "memory_id": row["experience_id"],
        "memory_type": "task",
        "when_to_use": row["when_to_use"],
        "content": row["content"],
        "score": row["score"] if row.get("score") is not None else 0.0,
        "time_created": row["created_at"].astimezone(UTC).strftime(TIME_FORMAT),
        "time_modified": row["updated_at"].astimezone(UTC).strftime(TIME_FORMAT),
        "author": row.get("author") or "",
        "metadata": metadata,
    }


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if text.strip():
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValidationError("line", f"line {number} of {path} is not JSON: {exc.msg}") from None


def import_jsonl(memory: ExperienceMemory, path: str | Path, workspace: str | None = None) -> int:
    """Upsert every memory of a ReMe dump by id (re-importing is idempotent); returns the count.

    The whole file is parsed, validated and written as one commit: all of it or nothing.
    """
    rows = [from_reme(record, line, workspace) for line, record in _records(Path(path))]
    if workspace is not None and rows:
        _refuse_moves(memory, [r["experience_id"] for r in rows], workspace)
    if rows:
        memory.upsert(rows)
    return len(rows)


def _refuse_moves(memory: ExperienceMemory, ids: list[str], workspace: str) -> None:
    """An upsert by id would move a memory that exists in another workspace into `workspace`: refuse it."""
    existing = memory.store.read(memory.table, columns=["experience_id", "workspace"], filter=in_list("experience_id", ids))
    elsewhere = sorted({(i, w) for i, w in zip(existing["experience_id"].to_pylist(), existing["workspace"].to_pylist()) if w != workspace})
    if elsewhere:
        shown = ", ".join(f"{i!r} (in {w!r})" for i, w in elsewhere[:3]) + (" ..." if len(elsewhere) > 3 else "")
        raise ValidationError(
            "workspace",
            f"{len(elsewhere)} memories of the dump already exist in another workspace: {shown}; importing into {workspace!r} "
            "would move them: import without a workspace, or into another table",
        )


def export_jsonl(memory: ExperienceMemory, path: str | Path, workspace: str | None = None, include_archived: bool = True) -> int:
    """Write experiences (one workspace or all) as a ReMe dump; returns the count."""
    conditions = []
    if workspace is not None:
        conditions.append(f"workspace = {literal(workspace)}")
    if not include_archived:
        conditions.append("status = 'active'")
    columns = [n for n in memory.store.schema(memory.table).names if n not in ("embedding", "dedup_embedding")]
    table: pa.Table = memory.store.read(memory.table, columns=columns, filter=" AND ".join(conditions) or None)
    with Path(path).open("w", encoding="utf-8") as handle:
        for row in table.to_pylist():
            handle.write(json.dumps(to_reme(row), ensure_ascii=False) + "\n")
    return table.num_rows
