"""Prefect's local mode, set up for a command that runs flows without a configured API.

Without `PREFECT_API_URL`, Prefect runs flows against a temporary server over a SQLite database
under `$PREFECT_HOME` (default `~/.prefect`). Two processes sharing that home lock each other out
(`database is locked` tracebacks from Prefect's services), so a command gets a fresh home in a
temporary folder, removed when it ends. And the temporary server gets as long to start as
`flows.server` gives its own: Prefect waits 20 s, which a machine busy with Ray workers or
other tests can exceed (the demo failed in CI with "Timed out while attempting to connect to
ephemeral Prefect API server"). Whatever the user set stays.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 120  # flows.server.STARTUP_TIMEOUT_S; the cli imports no Prefect before it needs it


@contextlib.contextmanager
def private_prefect_home() -> Iterator[str | None]:
    """For this block, when no API is configured: `PREFECT_HOME` in a temporary folder (unless set)
    and the temporary server's startup timeout (unless set). Yields the home it made, if any."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    with contextlib.ExitStack() as stack:
        if STARTUP_TIMEOUT_ENV not in os.environ:
            os.environ[STARTUP_TIMEOUT_ENV] = str(STARTUP_TIMEOUT_S)
            stack.callback(os.environ.pop, STARTUP_TIMEOUT_ENV, None)
        if os.environ.get("PREFECT_HOME"):
            yield None
            return
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="replaystore-prefect-"))
        os.environ["PREFECT_HOME"] = home
        stack.callback(os.environ.pop, "PREFECT_HOME", None)
        yield home
