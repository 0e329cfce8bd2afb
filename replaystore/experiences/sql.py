"""SQL fragments for Lance predicates and updates, built safely from Python values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from replaystore.errors import ValidationError


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


def check_predicate(where: str) -> str:
    """Refuse a user filter that could escape the parentheses it is wrapped in.

    Retrieval ANDs `(where)` with the workspace condition; a filter such as `1=1) OR (1=1` would
    otherwise turn that into a disjunction and leak other workspaces' rows.
    """
    if not isinstance(where, str) or not where.strip():
        raise ValidationError("where", "must be a non-empty SQL predicate string")
    depth, quote, prev = 0, "", ""
    for ch in where:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";" or prev + ch in ("--", "/*"):
            raise ValidationError("where", "comments and ';' are not allowed in a filter")
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValidationError("where", "unbalanced ')': a filter must be one self-contained predicate")
        prev = "" if quote else ch
    if quote or depth:
        raise ValidationError("where", "unterminated quote or '(' in the filter")
    return where
