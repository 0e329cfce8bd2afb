"""Prefect flows that keep a replaystore healthy: distill, index, prune, stream.

Each flow is thin: typed parameters checked before any work, tasks that are one library call plus
logging and retries, and a markdown artifact with a summary table. The flows are plain callables
(`prune(store_uri, retention_hours=24)`), so they run in Prefect's local mode without a server and
are served or deployed unchanged (`deploy/prefect.yaml`, `replaystore serve`).

This folder installs as `replaystore.flows` (see pyproject.toml), so deployments name flows by
module path (`replaystore.flows.prune.prune`) and resolve from a checkout and from the wheel alike.
"""

from replaystore.extras import require

require("prefect", extra="flows", feature="the Prefect flows (replaystore.flows, replaystore serve)")
