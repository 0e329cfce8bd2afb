"""Ray Train and Ray Data for streams — the only module of replaystore that imports Ray.

Two ways for workers to read: (1) the stream itself, each worker reading its rank's share
(`stream_trainer`; fast, mixture- and resume-aware); (2) Ray Data datasets built from the stream's
sources with the same versions, columns and filters (`ray_datasets`), for pipelines that want Ray
Data's operators. Workers log per-sample losses into a `LossLog`; each rank hands its log back as a
file in its final checkpoint, and `write_back` turns all of them into one merge into `priorities`
and, for sources reading experiences, one counter update of `freq` and `utility`.

Resources are the caller's (`ScalingConfig`): on a 2-core machine give workers fractional CPUs
(`resources_per_worker={"CPU": 0.5}`) so Ray Data's read tasks still get a CPU; on GPUs set
`use_gpu=True` and nothing else changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaystore.extras import require

require("ray.train", extra="ray", feature="streaming with Ray Train and Ray Data")
import ray  # noqa: E402 - the imports of Ray follow the check that names the extra
import ray.data  # noqa: E402
import ray.train  # noqa: E402
from ray.train import Checkpoint, RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from replaystore.errors import ValidationError  # noqa: E402
from replaystore.store import Store  # noqa: E402
from replaystore.stream.dataset import ReplayStream  # noqa: E402
from replaystore.stream.feedback import UtilityWrite, apply_utility, utility_counts  # noqa: E402
from replaystore.stream.priorities import LossLog, write_priorities  # noqa: E402

LOSS_FILE = "losses-rank{rank}.arrow"
TrainLoop = Callable[[ReplayStream, LossLog, dict[str, Any]], Any]


def ray_datasets(stream: ReplayStream) -> dict[str, ray.data.Dataset]:
    """One Ray Data dataset per source, at the versions the stream pinned for its current epoch."""
    if stream.versions is None:
        stream.set_epoch(stream.epoch)
    return {source.name: source.to_ray(ray.data, version) for source, version in zip(stream.sources, stream.versions or [])}


def stream_trainer(
    train_loop: TrainLoop,
    stream: ReplayStream,
    scaling_config: ScalingConfig,
    *,
    train_loop_config: dict[str, Any] | None = None,
    run_config: RunConfig | None = None,
    datasets: bool = False,
) -> TorchTrainer:
    """A `TorchTrainer` whose workers each run `train_loop(stream_for_my_rank, loss_log, config)`.

    The versions are resolved (and pinned) here, on the driver, so every worker reads the same
    snapshot; later epochs are agreed by rank 0 over torch.distributed. With `datasets=True` the
    trainer also gets `ray_datasets(stream)` for `ray.train.get_dataset_shard(name)`.
    """
    stream.for_rank(0, 1)  # refuses, here rather than in every worker, a stream with a fixed rank
    if stream.versions is None:
        stream.set_epoch(stream.epoch)

    def per_worker(config: dict[str, Any]) -> None:
        context = ray.train.get_context()
        rank = context.get_world_rank()
        log = LossLog()
        mine = stream.for_rank(rank, context.get_world_size())
        try:
            metrics = train_loop(mine, log, config) or {}
        finally:
            mine.close()  # the pins of later epochs: Ray may end this process without running exit hooks
        with tempfile.TemporaryDirectory() as folder:
            log.save(Path(folder) / LOSS_FILE.format(rank=rank))
            ray.train.report(dict(metrics), checkpoint=Checkpoint.from_directory(folder))

    shards: dict[str, Any] | None = dict(ray_datasets(stream)) if datasets else None
    return TorchTrainer(
        per_worker,
        train_loop_config=train_loop_config or {},
        scaling_config=scaling_config,
        run_config=run_config,
        datasets=shards,
    )


@dataclass(frozen=True)
class WriteBack:
    """What `write_back` wrote: the priorities version (None: no source keeps priorities) and one
    counter update per experiences table the stream read."""

    priorities: int | None
    utility: list[UtilityWrite]


def write_back(result: ray.train.Result, store: Store, stream: ReplayStream, helpful_below: float | None = None) -> WriteBack:
    """After `fit()`: every rank's logged losses → one merge into `priorities`, and the uses of
    experiences → one update of their `freq` / `utility` (see `feedback.write_utility`).

    Experience counters are checked before the priorities are written, so a refused write-back
    (no `helpful_below` for unjudged rows, positions outside the snapshot) writes nothing.
    """
    if result.checkpoint is None:
        raise ValidationError("result", "the run reported no checkpoint, so no losses came back")
    with result.checkpoint.as_directory() as folder:
        log = LossLog.load(sorted(Path(folder).glob(LOSS_FILE.format(rank="*"))))
    counts = utility_counts(store, stream.sources, log, helpful_below)
    version = write_priorities(store, stream.sources, log)
    return WriteBack(version, [apply_utility(store, c) for c in counts])
