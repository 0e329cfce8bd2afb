"""One Ray Train run per continual run: workers train task after task, the driver works in between.

Starting a Ray Train worker group costs tens of seconds on a small machine, so the demo starts one
per run, not one per task. A small `Gate` actor hands each task's spec (which table, ordering and
replay buffer to stream) to the workers, and tells the driver when rank 0 has saved the model;
meanwhile the driver selects exemplars, runs the flows and scores the next task.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import ray
import torch
import torch.nn.functional as F

import replaystore
from replaystore.cli.demo.model import MLP, to_input
from replaystore.curriculum import LinearPacing, curriculum_sampler
from replaystore.stream import ExactK, Proportions, ReplayStream, Shuffled, Source
from replaystore.stream.samplers import Curriculum

COLUMNS = ["data", "shape", "dtype", "class_id"]
POLL_S = 0.05


@dataclass(frozen=True)
class TaskSpec:
    """What the workers stream for one task."""

    table: str
    ordering: str
    replay: str | None
    steps_per_epoch: int
    epochs: int
    batch_size: int
    replay_per_batch: int
    pacing_c0: float | None  # None: no curriculum, the task's rows shuffled
    pacing_fraction: float  # share of the task's steps after which every row is admitted
    proportional: bool  # replay rows ∝ the two sources' sizes instead of exactly `replay_per_batch`
    distill_classes: tuple[int, ...]  # old classes whose logits the frozen model teaches (iCaRL's distillation)
    distill_weight: float
    lr: float
    seed: int
    out: str
    restart_from: str | None = None  # weights to load first: a new run on the same worker group


@ray.remote(num_cpus=0)
class Gate:
    """Driver ↔ workers hand-over: specs go in, finished tasks come out."""

    def __init__(self) -> None:
        self.specs: dict[int, TaskSpec | None] = {}
        self.finished: set[int] = set()

    def open(self, task: int, spec: TaskSpec | None) -> None:
        self.specs[task] = spec

    def spec(self, task: int) -> tuple[bool, TaskSpec | None]:
        return task in self.specs, self.specs.get(task)

    def finish(self, task: int) -> None:
        self.finished.add(task)

    def is_finished(self, task: int) -> bool:
        return task in self.finished


def task_stream(store: replaystore.Store, spec: TaskSpec, rank: int, world: int) -> ReplayStream:
    """The (paced) task data, mixed with exactly k replay exemplars per global batch when replaying."""
    sampler: Any = Shuffled()
    if spec.pacing_c0 is not None:
        ramp = max(1, round(spec.steps_per_epoch * spec.epochs * spec.pacing_fraction))
        _, paced = curriculum_sampler(store, spec.ordering, source=spec.table, pacing=LinearPacing(spec.pacing_c0, ramp), seed=spec.seed)
        sampler = Curriculum(paced)
    sources = [Source.from_store(store, spec.table, columns=COLUMNS, id_column="sample_id", sampler=sampler)]
    mixing: Any = None
    if spec.replay is not None:
        sources.append(Source.from_store(store, spec.replay, name="replay", columns=COLUMNS, id_column="sample_id", sampler=Shuffled()))
        sizes = [store.count(spec.table), store.count(spec.replay)]
        mixing = Proportions(sizes) if spec.proportional else ExactK(k=spec.replay_per_batch, replay=1)
    return ReplayStream(
        sources, batch_size=spec.batch_size, mixing=mixing, seed=spec.seed, rank=rank, world_size=world,
        steps_per_epoch=spec.steps_per_epoch,
    )  # fmt: skip


def distillation(logits: torch.Tensor, teacher: torch.Tensor, classes: tuple[int, ...], temperature: float = 2.0) -> torch.Tensor:
    """iCaRL/LwF knowledge distillation: the old model's softened answer over the old classes is a
    target the new model keeps matching, so new classes cannot take over the old ones' logits."""
    old = list(classes)
    target = F.softmax(teacher[:, old] / temperature, dim=1)
    return F.kl_div(F.log_softmax(logits[:, old] / temperature, dim=1), target, reduction="batchmean")


def _wait_spec(gate: Any, task: int) -> TaskSpec | None:
    while True:
        ready, spec = ray.get(gate.spec.remote(task))
        if ready:
            return spec
        time.sleep(POLL_S)


def worker_loop(config: dict[str, Any]) -> None:
    """Every worker: DDP model, then task after task from the gate until it says stop."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    store = replaystore.open(config["store_uri"])
    torch.manual_seed(config["seed"])
    model = MLP(config["hidden"])
    model.load_state_dict(config["state"])
    ddp = ray.train.torch.prepare_model(model)
    gate, task = config["gate"], 0
    while (spec := _wait_spec(gate, task)) is not None:
        if spec.restart_from is not None:
            model.load_state_dict(torch.load(spec.restart_from))
        optimizer = torch.optim.SGD(ddp.parameters(), lr=spec.lr, momentum=0.9)
        teacher = copy.deepcopy(model).eval() if spec.distill_classes else None
        stream = task_stream(store, spec, rank, world)
        ddp.train()
        for epoch in range(spec.epochs):
            stream.set_epoch(epoch)
            for batch in stream:
                x = to_input(batch["data"])
                logits = ddp(x)
                loss = F.cross_entropy(logits, batch["class_id"])
                if teacher is not None:
                    with torch.no_grad():
                        old = teacher(x)
                    loss = loss + spec.distill_weight * distillation(logits, old, spec.distill_classes)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        stream.close()
        if rank == 0:
            torch.save(model.state_dict(), spec.out)
            ray.get(gate.finish.remote(task))
        task += 1
    ray.train.report({"tasks": task})


class TrainingSession:
    """A running Ray Train worker group that trains one task per `train` call, for any number of runs."""

    def __init__(self, store: replaystore.Store, model: MLP, hidden: int, seed: int, workers: int) -> None:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self.folder = tempfile.TemporaryDirectory()
        self.gate = cast(Any, Gate).remote()  # an actor class: ray.remote adds .remote
        self.task = 0
        self.error: BaseException | None = None
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={"store_uri": store.uri, "state": model.state_dict(), "hidden": hidden, "seed": seed, "gate": self.gate},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(storage_path=self.folder.name, name="digits"),
        )
        self.thread = threading.Thread(target=self._fit, args=(trainer,), daemon=True)
        self.thread.start()

    def _fit(self, trainer: Any) -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # surfaced to the driver by train()/close()
            self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"Ray Train workers failed: {self.error}") from self.error
        if not self.thread.is_alive():
            raise RuntimeError("Ray Train workers stopped before the task finished")

    def train(self, restart: MLP | None = None, **spec: Any) -> dict[str, torch.Tensor]:
        """Hand one task to the workers (first resetting their model to `restart`'s weights);
        block until rank 0 saved the model; return its weights."""
        out = str(Path(self.folder.name) / f"model-task{self.task}.pt")
        restart_from = None
        if restart is not None:
            restart_from = str(Path(self.folder.name) / f"restart-task{self.task}.pt")
            torch.save(restart.state_dict(), restart_from)
        ray.get(self.gate.open.remote(self.task, TaskSpec(out=out, restart_from=restart_from, **spec)))
        while not ray.get(self.gate.is_finished.remote(self.task)):
            self._check()
            time.sleep(POLL_S)
        self.task += 1
        return torch.load(out)

    def close(self) -> None:
        ray.get(self.gate.open.remote(self.task, None))
        self.thread.join()
        self.folder.cleanup()
        if self.error is not None:
            raise RuntimeError(f"Ray Train workers failed: {self.error}") from self.error
