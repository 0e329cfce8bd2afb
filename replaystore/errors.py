"""Errors users see. Each names the field or object and the rule that was broken."""

from __future__ import annotations


class ReplayStoreError(Exception):
    """Base of every error replaystore raises on purpose."""


class ValidationError(ReplayStoreError, ValueError):
    """Input broke a rule of a schema or an API; nothing was written."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class TableNameError(ValidationError):
    """A table name that could escape the store or is not portable."""


class NotFoundError(ReplayStoreError, LookupError):
    """An unknown table, version, tag or buffer."""


class StoreURIError(ReplayStoreError, ValueError):
    """A store URI that Lance cannot open."""


class CommitConflictError(ReplayStoreError):
    """A write kept conflicting with concurrent writers after every retry."""


class BudgetExceededError(ReplayStoreError):
    """A write would leave a byte-budgeted buffer over its budget."""
