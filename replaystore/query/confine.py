"""Read-only confinement: parse a statement and refuse it before Polars ever sees it.

Polars SQL can read files (`read_csv(...)`, `read_parquet(...)`) and keeps a mutable catalog
(`CREATE TABLE`, `DROP`, `TRUNCATE`), so the only safe moment to refuse is before execution.
sqlglot (DuckDB dialect, the nearest to Polars SQL) gives a syntax tree in which statements,
table references and function calls can be checked structurally rather than by string matching.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from replaystore.errors import NotFoundError, ValidationError

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # it warns when it falls back to a raw Command

_WRITES = (exp.DML, exp.Insert, exp.TruncateTable, exp.Into)
_CATALOG = (
    exp.Create, exp.Drop, exp.Alter, exp.Attach, exp.Detach, exp.Install, exp.Use, exp.Set, exp.Pragma,
    exp.Grant, exp.Revoke, exp.Cache, exp.Uncache, exp.Refresh, exp.Analyze, exp.LoadData, exp.Export,
    exp.Transaction, exp.Commit, exp.Rollback, exp.Kill,
)  # fmt: skip
_KEYWORDS = {"truncatetable": "TRUNCATE", "transaction": "BEGIN", "loaddata": "LOAD DATA", "into": "SELECT INTO"}
_FILE_FUNCTION = re.compile(r"^(read|scan|load|glob|sniff)(_\w*)?$|_(scan|read|auto)$", re.IGNORECASE)
_PATHLIKE = re.compile(r"[/\\.:~]")
_STREAM_BREAKERS = (exp.Window, exp.Unnest, exp.Explode)
_MISSING = re.compile(r"missing for <class '[\w.]*\.(\w+)'>")
_INTERNALS = re.compile(r"<(class|Token)[^>]*>")
_CLAUSES = {"Where": "WHERE", "Having": "HAVING", "Order": "ORDER BY", "Group": "GROUP BY", "Limit": "LIMIT", "Join": "JOIN", "From": "FROM"}
_HYPHENATED = re.compile(r"\b[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)+\b")


class QueryRefusedError(ValidationError):
    """A statement that would write, change the catalog or read outside the store."""

    def __init__(self, rule: str) -> None:
        super().__init__("query", f"refused: {rule}")


class QuerySyntaxError(ValidationError):
    """A statement that does not parse; the rule says where."""

    def __init__(self, rule: str) -> None:
        super().__init__("query", f"syntax error: {rule}")


@dataclass(frozen=True)
class Statement:
    """What a checked query reads, and whether Polars' streaming engine can run it."""

    text: str
    tables: frozenset[str]
    streamable: bool


def inspect(query: str, tables: Collection[str]) -> Statement:
    """Parse `query`, refuse anything but one read of `tables`, and say what it reads."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query", "must be a non-empty SQL string")
    statements = [s for s in _parse(query) if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        raise ValidationError("query", "must contain a statement, not only comments or ';'")
    if len(statements) > 1:
        raise QueryRefusedError(f"{len(statements)} statements given; run one SELECT at a time")
    root = statements[0]
    for node in root.walk():
        _refuse_statement(node)
    if not isinstance(root, (exp.Query, exp.Values)):
        raise QueryRefusedError(f"{_keyword(root)} is not a query; only SELECT, WITH and VALUES run")
    for func in root.find_all(exp.Func):
        name = func.name if isinstance(func, exp.Anonymous) else func.sql_name()
        if _FILE_FUNCTION.search(name):
            raise QueryRefusedError(f"function {name.lower()}() reads outside the store; query the store's tables by name")
    ctes = {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    read = {_table_name(t, set(tables), ctes) for t in root.find_all(exp.Table)}
    streamable = next(root.find_all(*_STREAM_BREAKERS), None) is None
    return Statement(query, frozenset(read - ctes), streamable)


def _parse(query: str) -> list[exp.Expr | None]:
    try:
        return sqlglot.parse(query, read="duckdb")
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f"line {first.get('line')}, column {first.get('col')}" if first.get("line") else "unknown position"
        near = (first.get("highlight") or "").strip()
        text = _describe(str(first.get("description") or exc).splitlines()[0])
        raise QuerySyntaxError(f"{text} at {where}" + (f" near {near!r}" if near else "") + _hyphen_hint(query)) from None
    except TokenError as exc:
        missing = re.search(r"Missing (\S+) from \d+:(\d+)", str(exc.__cause__ or exc))
        if missing is None:
            raise QuerySyntaxError(str(exc).splitlines()[0]) from None
        offset = int(missing.group(2))
        line = query.count("\n", 0, offset) + 1
        column = offset - query.rfind("\n", 0, offset)
        raise QuerySyntaxError(f"unterminated {missing.group(1)} opened at line {line}, column {column}") from None


def _describe(text: str) -> str:
    """sqlglot's message without its internals: "Required keyword: 'this' missing for <class '….Where'>" → "incomplete WHERE"."""
    missing = _MISSING.search(text)
    if missing is not None:
        name = missing.group(1)
        return f"incomplete {_CLAUSES.get(name, 'expression')}"
    return _INTERNALS.sub("a token", text)


def _hyphen_hint(query: str) -> str:
    """Table names may contain '-', which SQL reads as minus unless the name is quoted."""
    bare = _HYPHENATED.search(re.sub(r"'[^']*'|\"[^\"]*\"", "''", query))
    return f"; quote names that contain '-': \"{bare.group(0)}\"" if bare else ""


def _keyword(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return _KEYWORDS.get(node.key, node.key.upper())


def _refuse_statement(node: exp.Expr) -> None:
    if isinstance(node, _WRITES):
        raise QueryRefusedError(f"{_keyword(node)} writes data; replaystore SQL is read-only")
    if isinstance(node, _CATALOG):
        raise QueryRefusedError(f"{_keyword(node)} changes the catalog or session; replaystore SQL is read-only")
    if isinstance(node, exp.Command):
        raise QueryRefusedError(f"{_keyword(node)} is not a query; only SELECT, WITH and VALUES run")


def _table_name(table: exp.Table, tables: set[str], ctes: set[str]) -> str:
    """A table reference must name a store table or a CTE, unqualified; nothing else is read."""
    if not isinstance(table.this, exp.Identifier):
        raise QueryRefusedError(f"table function {table.this.sql(dialect='duckdb')[:60]} in FROM; only the store's tables can be read")
    if table.db or table.catalog:
        raise QueryRefusedError(f"qualified name {table.sql(dialect='duckdb')} reaches outside the store; use the bare table name")
    name = table.name
    if name in tables or name in ctes:
        return name
    if _PATHLIKE.search(name):
        raise QueryRefusedError(f"{name!r} is a file or URL; only the store's tables can be read")
    raise NotFoundError(f"unknown table '{name}' (tables in this store: {', '.join(sorted(tables)) or 'none'})")
