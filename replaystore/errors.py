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

    def __reduce__(self) -> tuple[object, tuple[type, str, str]]:
        """Rebuild from (field, rule), so the error survives pickling to another process (Ray, spawn)."""
        return _rebuild_validation_error, (type(self), self.field, self.rule)


def _rebuild_validation_error(cls: type[ValidationError], field: str, rule: str) -> ValidationError:
    """Subclasses take other constructor arguments; set what ValidationError holds, whatever the subclass."""
    error = cls.__new__(cls)
    ValidationError.__init__(error, field, rule)
    return error


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


class SchemaOutdatedError(ReplayStoreError):
    """A table's stored schema is older than this replaystore's and lacks columns a read or write needs.

    Nothing migrates implicitly (readers never write): the message names the command that does.
    """


class ReadOnlyError(ReplayStoreError, PermissionError):
    """The object store refused a write (read-only credentials); nothing was committed."""
