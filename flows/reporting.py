"""What a flow tells people: a markdown artifact with a summary table, and progress for long steps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

T = TypeVar("T")


def _cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-style markdown table of `rows` (columns in first-seen order)."""
    if not rows:
        return "_nothing to report_"
    headers = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(row.get(h)) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def publish_summary(flow: str, title: str, sections: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Publish one markdown artifact (key `<flow>-summary`, so runs of a flow line up) and return it."""
    parts = [f"# {title}"]
    for heading, rows in sections.items():
        parts += [f"## {heading}", markdown_table(rows)]
    markdown = "\n\n".join(parts)
    key = re.sub(r"[^a-z0-9-]+", "-", f"{flow}-summary".lower())
    create_markdown_artifact(markdown=markdown, key=key, description=title)
    return markdown


def with_progress(items: Iterable[T], description: str) -> Iterator[T]:
    """Yield `items`, keeping a Prefect progress artifact at the share done."""
    todo = list(items)
    artifact = cast(UUID, create_progress_artifact(progress=0.0 if todo else 100.0, description=description))  # sync call
    for done, item in enumerate(todo, start=1):
        yield item
        update_progress_artifact(artifact_id=artifact, progress=100.0 * done / len(todo))
