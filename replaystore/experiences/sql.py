"""Checks on the SQL filters users pass to retrieval (the quoting helpers are `replaystore.predicates`)."""

from __future__ import annotations

from replaystore.errors import ValidationError


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
