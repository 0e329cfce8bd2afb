"""A Prefect home of the command's own for flows run in Prefect's local mode.

Without `PREFECT_API_URL`, Prefect runs flows against a local SQLite database under
`$PREFECT_HOME` (default `~/.prefect`); two processes sharing it lock each other out
(`database is locked` tracebacks from Prefect's services). A command that runs flows locally
gets a fresh home in a temporary folder, removed when it ends, unless the user set one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def private_prefect_home() -> Iterator[str | None]:
    """Set `PREFECT_HOME` to a temporary folder for this block when neither it nor an API is configured."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_HOME"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="replaystore-prefect-") as home:
        os.environ["PREFECT_HOME"] = home
        try:
            yield home
        finally:
            os.environ.pop("PREFECT_HOME", None)
