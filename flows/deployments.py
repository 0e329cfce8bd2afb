"""The deployments of `deploy/prefect.yaml`, served in one process by Prefect's own runner.

`prefect deploy --all` reads the YAML for a server with workers; `serve` reads the same file, so the
embedded default (`replaystore serve`) and a real deployment share one list of flows, schedules and
parameters. Served runs get the local store's URI in place of the file's `store_uri`.
"""

from __future__ import annotations

import importlib
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from replaystore.errors import ValidationError
from replaystore.flows.server import prefect_api

# deploy/ ships as the data package `replaystore.deploy` (pyproject.toml); installed, it is a real file.
PREFECT_FILE = Path(str(files("replaystore.deploy") / "prefect.yaml"))


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """Import the flow of a module-path entrypoint (`replaystore.flows.prune.prune`), as Prefect's worker does."""
    module, _, name = entrypoint.rpartition(".")
    if ":" in entrypoint or not module or not name:
        raise ValidationError("entrypoint", f"{entrypoint!r} is not a module path of the form package.module.flow")
    flow = getattr(importlib.import_module(module), name)
    if not isinstance(flow, Flow):
        raise ValidationError("entrypoint", f"{entrypoint!r} is not a Prefect flow")
    return flow


def _schedule(spec: dict[str, Any]) -> Schedule:
    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone"))
    if "interval" in spec:
        return Interval(spec["interval"], timezone=spec.get("timezone"))
    raise ValidationError("schedules", f"only cron and interval schedules are served, got {sorted(spec)}")


def deployment_specs(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml (anchors resolved)."""
    if not prefect_file.is_file():
        raise ValidationError("prefect_file", f"{prefect_file} does not exist")
    return list(yaml.safe_load(prefect_file.read_text()).get("deployments") or [])


def runner_deployments(store_uri: str, prefect_file: Path = PREFECT_FILE) -> list[RunnerDeployment]:
    """One served deployment per entry of the file, each aimed at `store_uri`."""
    out = []
    for spec in deployment_specs(prefect_file):
        out.append(
            cast(
                RunnerDeployment,
                load_flow(spec["entrypoint"]).to_deployment(  # a sync call returns the deployment
                    name=spec["name"],
                    description=spec.get("description"),
                    tags=spec.get("tags"),
                    parameters={**(spec.get("parameters") or {}), "store_uri": store_uri},
                    schedules=[_schedule(s) for s in spec.get("schedules") or []],
                    entrypoint_type=EntrypointType.MODULE_PATH,
                ),
            )
        )
    return out


def serve_all(store_uri: str, prefect_file: Path = PREFECT_FILE, limit: int | None = None) -> list[str]:
    """Serve every deployment with its schedules until Ctrl-C; returns the names served."""
    deployments = runner_deployments(store_uri, prefect_file)
    with prefect_api():
        serve(*deployments, limit=limit)
    return [f"{d.flow_name}/{d.name}" for d in deployments]
