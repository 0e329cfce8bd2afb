"""Which task failures are worth retrying, and the `store_task` decorator that applies the policy.

The store already retries Lance commit conflicts inside one call; a task retry covers what is left
transient after that (a conflict storm, an object store or file system hiccup). Errors that name a
broken rule (`ValidationError`, `NotFoundError`, budgets) would fail again, so they fail at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from replaystore.errors import CommitConflictError, ReplayStoreError

TRANSIENT: tuple[type[BaseException], ...] = (CommitConflictError, OSError, TimeoutError, ConnectionError)
RETRIES = 3
RETRY_DELAYS_S = [1, 5, 15]

F = TypeVar("F", bound=Callable[..., Any])


def is_transient(error: BaseException) -> bool:
    """Conflicts left after the store's own retries and I/O errors; never a broken rule."""
    if isinstance(error, ReplayStoreError) and not isinstance(error, CommitConflictError):
        return False
    return isinstance(error, TRANSIENT)


def _retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def store_task(fn: F | None = None, *, retries: int = RETRIES, delays: list[float] | None = None) -> Any:
    """A Prefect task that retries transient store errors (`@store_task` or `@store_task(retries=…)`)."""

    def wrap(f: F) -> Any:
        return task(
            retries=retries,
            retry_delay_seconds=delays if delays is not None else [float(d) for d in RETRY_DELAYS_S[:retries]] or 0,
            retry_condition_fn=_retry_transient,
            cache_policy=NO_CACHE,  # every call changes the store: never skip one as "cached"
        )(f)

    return wrap(fn) if fn is not None else wrap
