"""ReMe task-memory dumps in and out, so existing ReMe memories move between the two.

One JSON object per line (or one JSON array of them, as ReMe's cookbook demos write):
`workspace_id, memory_id, memory_type ("task"), when_to_use, content, score, time_created,
time_modified ("%Y-%m-%d %H:%M:%S"), author, metadata`. ReMe's older dumps (its `docs/library`
research files) say `experience_id` / `experience_type` and keep author and times inside
`metadata`; they import too, with `experience_type` kept in our `metadata`. Our columns that ReMe
keeps inside `metadata` (freq, utility, tags, confidence, kind, status, source_ids) go there on
export and come back out on import; other metadata keys are kept as our `metadata` JSON. A null
score stays null both ways; score and confidence are float64, so they come back as written.
A file that names one memory twice is refused (naming both lines): a dump holds each memory once.
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
ID_KEYS = ("memory_id", "experience_id")


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


def _first(record: dict[str, Any], names: tuple[str, str]) -> Any:
    """The value of ReMe's current key, else of its older name."""
    return record[names[0]] if names[0] in record else record.get(names[1])


def from_reme(record: Any, line: int, workspace: str | None = None) -> dict[str, Any]:
    """One ReMe memory dict (current or older format) → one experiences row (without embeddings)."""
    if not isinstance(record, dict):
        raise ValidationError("line", f"line {line}: expected a JSON object, got {type(record).__name__}")
    if record.get("memory_type", "task") != "task":
        raise ValidationError("memory_type", f"line {line}: only ReMe task memories import, got {record['memory_type']!r}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", f"line {line}: must be a JSON object")
    metadata = dict(metadata)
    if "experience_type" in record:  # ReMe's older name for the memory type ("text"): kept, not dropped
        metadata.setdefault("experience_type", record["experience_type"])
    lifted = {k: metadata.pop(k) for k in LIFTED if k in metadata}
    memory_id = _first(record, ID_KEYS)
    if not isinstance(memory_id, str) or not memory_id:
        raise ValidationError("memory_id", f"line {line}: must be a non-empty string (or experience_id in older dumps)")
    if not (isinstance(record.get("workspace_id"), str) and record["workspace_id"]) and not workspace:
        raise ValidationError("workspace_id", f"line {line}: must be a non-empty string")
    row: dict[str, Any] = {
        "experience_id": memory_id,
        "workspace": workspace or record["workspace_id"],
        "when_to_use": record.get("when_to_use", ""),
        "content": record.get("content", ""),
        "score": record.get("score"),
        "author": record.get("author") or metadata.get("author") or None,
        "metadata": json.dumps(metadata, sort_keys=True) if metadata else None,
        "kind": lifted.get("kind", "insight"),
        **{k: lifted[k] for k in ("freq", "utility", "tags", "confidence", "status", "source_ids") if k in lifted},
    }
    for ours, theirs, older in (("created_at", "time_created", "created_time"), ("updated_at", "time_modified", "modified_time")):
        value, name = (record.get(theirs), theirs) if record.get(theirs) else (metadata.get(older), f"metadata.{older}")
        if (when := _time(value, name, line)) is not None:
            row[ours] = when
    return row


def to_reme(row: dict[str, Any]) -> dict[str, Any]:
    """One experiences row → one ReMe memory dict (a null score stays null)."""
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    metadata.update({k: row[k] for k in LIFTED if row.get(k) is not None})
    return {
        "workspace_id": row["workspace"],
        "memory_id": row["experience_id"],
        "memory_type": "task",
        "when_to_use": row["when_to_use"],
        "content": row["content"],
        "score": row.get("score"),
        "time_created": row["created_at"].astimezone(UTC).strftime(TIME_FORMAT),
        "time_modified": row["updated_at"].astimezone(UTC).strftime(TIME_FORMAT),
        "author": row.get("author") or "",
        "metadata": metadata,
    }


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a JSON-lines file or of a JSON array file."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        yield from _array_items(text, path)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError("line", f"line {number} of {path} is not JSON: {exc.msg}") from None


def _array_items(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """The items of a JSON array with the line each starts on."""
    decoder = json.JSONDecoder()
    at = text.index("[") + 1
    while True:
        at = _skip_space(text, at)
        if text.startswith("]", at):
            return
        try:
            item, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise ValidationError("line", f"line {exc.lineno} of {path} is not JSON: {exc.msg}") from None
        yield text.count("\n", 0, at) + 1, item
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at += 1
        elif not text.startswith("]", at):
            number = text.count("\n", 0, at) + 1
            raise ValidationError("line", f"line {number} of {path} is not JSON: expected ',' or ']'")


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _no_repeated_ids(rows: list[dict[str, Any]], lines: list[int], path: Path) -> None:
    first: dict[str, int] = {}
    for row, line in zip(rows, lines, strict=True):
        seen = first.setdefault(row["experience_id"], line)
        if seen != line:
            raise ValidationError(
                "memory_id", f"line {line} of {path} repeats {row['experience_id']!r} from line {seen}: a dump holds each memory once; remove one"
            )


def import_jsonl(memory: ExperienceMemory, path: str | Path, workspace: str | None = None) -> int:
    """Upsert every memory of a ReMe dump by id (re-importing is idempotent); returns the count.

    The whole file is parsed, validated and written as one commit: all of it or nothing.
    """
    path = Path(path)
    parsed = list(_records(path))
    rows = [from_reme(record, line, workspace) for line, record in parsed]
    _no_repeated_ids(rows, [line for line, _ in parsed], path)
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
