"""Bounded retries with jitter for Lance commit conflicts between concurrent writers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from lance.commit import CommitConflictError as LanceConflict

from replaystore.errors import CommitConflictError

T = TypeVar("T")

MAX_ATTEMPTS = 30
BASE_DELAY_S = 0.01
MAX_DELAY_S = 1.0


def is_conflict(exc: BaseException) -> bool:
    """Lance reports conflicts as CommitConflictError or as an OSError whose text says so.

    "Incompatible transaction" counts too: Lance cannot rebase the write onto what landed meanwhile
    (a compaction racing a strict overwrite from `Store.atomically`), so the write runs again from
    the latest version, as every caller of `with_retries` does."""
    if isinstance(exc, LanceConflict):
        return True
    text = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError, ValueError)) and any(
        mark in text for mark in ("commit conflict", "retryable", "conflicting", "was concurrently", "incompatible transaction")
    )


def is_denied(exc: BaseException) -> bool:
    """The storage refused an operation for lack of rights (an S3 403, a read-only file system):
    Lance reports it as an OSError (or ValueError) whose text says so."""
    text = str(exc)
    return isinstance(exc, (OSError, ValueError)) and any(
        mark in text for mark in ("lacked the necessary privileges", "AccessDenied", "403 Forbidden", "Permission denied")
    )


def with_retries(write: Callable[[], T], attempts: int = MAX_ATTEMPTS) -> T:
    """Run `write`, retrying conflicts with exponential backoff and full jitter.

    `write` must re-read whatever it depends on, so a retry applies the change to the latest version.
    """
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            if not is_conflict(exc):
                raise
            if attempt == attempts - 1:
                raise CommitConflictError(f"write still conflicted after {attempts} attempts: {exc}") from exc
            backoff(attempt)
    raise AssertionError("unreachable")


def backoff(attempt: int) -> None:
    """Sleep before retry `attempt` (0-based): exponential with full jitter, so racing writers spread out."""
    time.sleep(random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2**attempt)))
