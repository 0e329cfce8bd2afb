"""Bounded retries with jitter for Lance commit conflicts between concurrent writers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from replaystore.errors import CommitConflictError
from replaystore.lance_errors import is_conflict

T = TypeVar("T")

MAX_ATTEMPTS = 30
BASE_DELAY_S = 0.01
MAX_DELAY_S = 1.0


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
