"""The stream flow: a Ray Train run over a mixture read from the store, then its losses written
back as replay priorities in one merge, and the uses of experiences as one `freq` / `utility`
update (a use helped when the loop flagged it, else when its loss ≤ `helpful_below`).

The training loop is user code, named by import path (`package.module:function`, the
`replaystore.stream.ray_train.TrainLoop` signature), so the flow stays deployable with JSON
parameters. The stream pins the versions it reads (pin tags), so a prune running meanwhile cannot
remove them. Ray is imported only when the run starts; without `ray_address` the run gets a
private local Ray instance (never a neighbour's cluster), with `ray_address` it joins a cluster.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from replaystore.errors import ValidationError
from replaystore.extras import require
from replaystore.flows.parameters import Name, Positive, StoreURI, Strict, checked, open_store
from replaystore.flows.reporting import publish_summary
from replaystore.flows.retries import store_task
from replaystore.flows.tables import existing_tables
from replaystore.store import Store
from replaystore.stream import Prioritized, Proportions, ReplayStream, Sequential, Shuffled, Source, Uniform
from replaystore.stream.priorities import PRIORITIES

SAMPLERS = {"sequential": Sequential, "shuffled": Shuffled, "uniform": Uniform, "prioritized": Prioritized}


class StreamSource(Strict):
    """One table of the mixture and its share of every global batch."""

    table: Name
    columns: list[str] | None = None
    filter: str | None = None
    id_column: str | None = "sample_id"
    sampler: Literal["sequential", "shuffled", "uniform", "prioritized"] = "shuffled"
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0


def load_train_loop(path: str) -> Callable[..., Any]:
    """Import `package.module:function`."""
    module, _, name = path.partition(":")
    try:
        loop = getattr(importlib.import_module(module), name) if name else None
    except (ImportError, AttributeError) as exc:
        raise ValidationError("train_loop", f"cannot import {path!r}: {exc}") from None
    if not callable(loop):
        raise ValidationError("train_loop", f"{path!r} is not a callable of the form package.module:function")
    return loop


def build_stream(store: Store, sources: list[StreamSource], batch_size: int, seed: int) -> ReplayStream:
    """The mixture: one store source per table, rows per global batch in proportion to the weights."""
    parts = [Source.from_store(store, s.table, columns=s.columns, filter=s.filter, id_column=s.id_column, sampler=SAMPLERS[s.sampler]()) for s in sources]
    return ReplayStream(parts, batch_size=batch_size, mixing=Proportions([s.weight for s in sources]), seed=seed)


@store_task(retries=1, delays=[10])
def train_and_write_back(
    store: Store,
    stream: ReplayStream,
    train_loop: str,
    config: dict[str, Any],
    workers: int,
    cpus_per_worker: float,
    ray_address: str | None,
    storage_path: str | None,
    helpful_below: float | None,
) -> dict[str, Any]:
    """Fit a TorchTrainer over the stream; every rank's losses become one priorities merge and
    one experience-counter update per experiences table."""
    require("ray.train", extra="ray", feature="the stream flow")
    import ray
    from ray.train import RunConfig, ScalingConfig

    from replaystore.stream.ray_train import stream_trainer, write_back

    logger = get_run_logger()
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address or "local", include_dashboard=False, log_to_driver=False)
    try:
        trainer = stream_trainer(
            load_train_loop(train_loop), stream, ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
            train_loop_config=config, run_config=RunConfig(storage_path=storage_path),
        )  # fmt: skip
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        back = write_back(result, store, stream, helpful_below)
    finally:
        if started:
            ray.shutdown()
    names = [s.name for s in stream.sources]
    version = back.priorities
    written = store.count(PRIORITIES, filter=" OR ".join(f"source = '{n}'" for n in names)) if version is not None else 0
    utility = [asdict(u) for u in back.utility]
    logger.info("trained %d workers: %s; priorities version %s holds %d rows of %s; experience counters %s",
                workers, result.metrics, version, written, names, utility)  # fmt: skip
    return {"metrics": dict(result.metrics or {}), "priorities_version": version, "priority_rows": written, "utility": utility}


@flow(name="stream", validate_parameters=False, log_prints=True)
@checked
def stream(
    sources: Annotated[list[StreamSource], Field(min_length=1)],
    train_loop: str,
    store_uri: StoreURI = None,
    train_loop_config: dict[str, Any] | None = None,
    batch_size: Positive = 32,
    workers: Positive = 2,
    cpus_per_worker: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.5,
    seed: int = 0,
    ray_address: str | None = None,
    storage_path: str | None = None,
    helpful_below: Annotated[float | None, Field(allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    """Train `train_loop` on Ray over the mixture of `sources`; write the losses back as priorities
    and, for experiences tables, as uses (`freq`) and helpful uses (`utility`)."""
    store = open_store(store_uri)
    load_train_loop(train_loop)
    existing_tables(store, [s.table for s in sources])
    replay = build_stream(store, sources, batch_size, seed)
    result = train_and_write_back(store, replay, train_loop, train_loop_config or {}, workers, cpus_per_worker, ray_address, storage_path, helpful_below)
    metrics = [{"metric": k, "value": v} for k, v in result["metrics"].items() if isinstance(v, (int, float))]
    sources_rows = [{"table": s.table, "sampler": s.sampler, "weight": s.weight} for s in sources]
    written = [{"priorities_version": result["priorities_version"], "rows": result["priority_rows"]}]
    sections = {"mixture": sources_rows, "metrics": metrics, "priorities": written, "experience utility": result["utility"]}
    publish_summary("stream", f"stream from {store.uri}", sections)
    return result
