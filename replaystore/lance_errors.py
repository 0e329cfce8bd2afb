"""What a Lance error means, in one place.

Lance reports most failures as `OSError`/`ValueError` whose text says what happened; these
predicates read that text, so the rest of the code asks a question ("was it a commit conflict?")
instead of matching strings. `tests/test_lance_errors.py` raises each error from the pinned pylance
and checks its predicate, so a Lance upgrade that rewords one fails there, not in production.
"""

from __future__ import annotations

import re

from lance.commit import CommitConflictError as LanceConflict

_CONFLICT = ("commit conflict", "retryable", "conflicting", "was concurrently", "incompatible transaction")
_DENIED = ("lacked the necessary privileges", "AccessDenied", "403 Forbidden", "Permission denied")
_NOT_FOUND = ("not found", "does not exist", "no such file")
_MISSING_COLUMN = (re.compile(r"No field named ([^\s.,]+)"), re.compile(r'unable to find column "([^"]+)"'))
USER_INPUT = "Invalid user input: "


def _lance_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, RuntimeError, ValueError))


def is_conflict(exc: BaseException) -> bool:
    """Another writer committed first. "Incompatible transaction" counts too: Lance cannot rebase the
    write onto what landed meanwhile (a compaction racing a strict overwrite from
    `Store.atomically`), so the write runs again from the latest version."""
    text = str(exc).lower()
    return isinstance(exc, LanceConflict) or (_lance_error(exc) and any(mark in text for mark in _CONFLICT))


def is_denied(exc: BaseException) -> bool:
    """The storage refused the operation for lack of rights (an S3 403, a read-only file system)."""
    return isinstance(exc, (OSError, ValueError)) and any(mark in str(exc) for mark in _DENIED)


def is_not_found(exc: BaseException) -> bool:
    """The dataset, version or tag asked for does not exist."""
    text = str(exc).lower()
    return isinstance(exc, (OSError, ValueError)) and any(mark in text for mark in _NOT_FOUND)


def is_unknown_version(exc: BaseException) -> bool:
    """Opening a version or tag that the dataset does not have."""
    text = str(exc).lower()
    return is_not_found(exc) or (isinstance(exc, (OSError, ValueError)) and ("version" in text or "tag" in text))


def is_already_exists(exc: BaseException) -> bool:
    """A create found the dataset already there (another creator won)."""
    return isinstance(exc, OSError) and "already exists" in str(exc).lower()


def is_version_gone(exc: BaseException) -> bool:
    """A commit's read version was removed by cleanup before the commit landed."""
    return _lance_error(exc) and "_versions/" in str(exc) and "not found" in str(exc).lower()


def is_vanished_tag(exc: BaseException) -> bool:
    """A tag file disappeared while Lance read the tags (a pin released by another process)."""
    return isinstance(exc, (OSError, ValueError)) and "_refs/tags" in str(exc)


def user_input(exc: BaseException) -> str | None:
    """The reason Lance gives for refusing a predicate or expression, or None for other errors."""
    text = str(exc)
    if not isinstance(exc, (OSError, ValueError)) or USER_INPUT not in text:
        return None
    return text.removeprefix(USER_INPUT).split(", /")[0]


def missing_column(message: str) -> str | None:
    """The column a Lance ("No field named x") or Polars ("unable to find column") error says is absent."""
    for pattern in _MISSING_COLUMN:
        if m := pattern.search(message):
            return m.group(1)
    return None
