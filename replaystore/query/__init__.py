"""Read-only SQL over every table of a store: Polars SQL on lazy Lance scans.

`confine` parses and refuses statements before execution; `execute` registers the tables a
statement reads and runs it, eagerly (`sql`, `sql_arrow`) or as a stream of batches.
"""

from replaystore.query.confine import QueryRefusedError, QuerySyntaxError, Statement, inspect
from replaystore.query.execute import plan, sql, sql_arrow, sql_batches

__all__ = ["QueryRefusedError", "QuerySyntaxError", "Statement", "inspect", "plan", "sql", "sql_arrow", "sql_batches"]
