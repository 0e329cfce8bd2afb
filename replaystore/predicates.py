"""SQL text for Lance predicates and update expressions, built safely from Python values.

Shared by every layer that filters or updates by id (experiences, the stream's training feedback),
so quoting and Lance's expression quirks live in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

NOW = "arrow_cast(now(), 'Timestamp(Microsecond, Some(\"UTC\"))')"  # exactly the schemas' timestamp type


def literal(value: str) -> str:
    """A SQL string literal (quotes doubled), so ids and workspaces cannot break out of it."""
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(literal(v) for v in values)})"


def increments(column: str, key: str, counts: Mapping[str, int]) -> str:
    """`column + n1·[key in ids1] + n2·[key in ids2] …` — one update adds each row its own count.

    Lance's update planner has no CASE, but casts a boolean IN-test to an integer.
    """
    by_count: dict[int, list[str]] = defaultdict(list)
    for k, n in counts.items():
        by_count[n].append(k)
    terms = [f"CAST({in_list(key, ids)} AS BIGINT) * {n}" for n, ids in sorted(by_count.items())]
    return " + ".join([column, *terms])
