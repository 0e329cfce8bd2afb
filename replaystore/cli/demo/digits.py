"""Class-incremental digits: 10 classes in 5 tasks, trained by Ray Train workers from the store.

Each task's images go into a `task_samples` table; the current model scores them (loss) into a
curriculum ordering that paces the task; Ray Train workers (one worker group for the whole run, see
`training`) stream the paced task data mixed with replay exemplars from a MEMO-budgeted buffer;
after the task the distill flow offers the task's images to the buffer (herding on the model's
features) and the prune flow keeps it inside its byte budget. The same seeds run
once more with no replay (fine-tuning) for the forgetting comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from sklearn.datasets import load_digits
from torch import nn

from replaystore.cli.demo.model import MLP, to_input
from replaystore.cli.demo.training import TrainingSession
from replaystore.curriculum import ModelLoss, OrderingDefinition, build_ordering, score
from replaystore.exemplars import ExemplarBuffer, model_nbytes, sample_nbytes
from replaystore.exemplars.samples import encode_raw
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.stream import to_tensors

IMAGE_SHAPE = (8, 8)
TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


@dataclass
class DigitsConfig:
    seed: int = 0
    epochs: int = 15
    batch_size: int = 32
    replay_per_batch: int = 12
    lr: float = 0.05
    hidden: int = 128
    exemplar_slots: int = 200
    budget_bytes: int | None = None  # default: the model's bytes + exemplar_slots images
    workers: int = 2
    pacing_c0: float = 0.3
    tasks: list[tuple[int, int]] = field(default_factory=lambda: list(TASKS))


@dataclass
class Split:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_split(seed: int) -> Split:
    """sklearn's digits, 70/30 stratified split, pixels as uint8 8×8 images."""
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.uint8)
    y = digits.target.astype(np.int64)
    tx, vx, ty, vy = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    return Split(tx, ty, vx, vy)


def default_budget(cfg: DigitsConfig) -> int:
    model = MLP(cfg.hidden)
    return model_nbytes(model) + cfg.exemplar_slots * sample_nbytes(IMAGE_SHAPE, np.uint8)


def task_rows(split: Split, task: int, classes: tuple[int, ...]) -> dict[str, Any]:
    """The task's training images as `task_samples` rows, encoded like exemplars (one buffer, no per-row Python)."""
    mask = np.isin(split.train_y, classes)
    ids = np.nonzero(mask)[0].astype(np.int64)
    return {
        "sample_id": ids,
        "task_id": np.full(len(ids), task, dtype=np.int64),
        "class_id": split.train_y[mask],
        **encode_raw(split.train_x[mask]).columns,
    }


def evaluate(model: nn.Module, split: Split, tasks: list[tuple[int, int]]) -> list[float]:
    """Accuracy on each task's test images, predicting among all classes (class-incremental)."""
    model.eval()
    with torch.no_grad():
        pred = model(to_input(torch.from_numpy(split.test_x))).argmax(1).numpy()
    return [float((pred[m] == split.test_y[m]).mean()) for m in (np.isin(split.test_y, c) for c in tasks)]


@dataclass
class RunResult:
    """Accuracy matrix `acc[i][j]`: task i's test accuracy after training task j."""

    acc: list[list[float]]
    budgets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def average_accuracy(self) -> float:
        return float(np.mean([row[-1] for row in self.acc]))

    @property
    def forgetting(self) -> float:
        """Mean over all but the last task of (best accuracy ever − final accuracy)."""
        t = len(self.acc)
        if t < 2:
            return 0.0
        return float(np.mean([max(self.acc[i][i:t - 1]) - self.acc[i][-1] for i in range(t - 1)]))


def run(
    store: Store,
    session: TrainingSession,
    cfg: DigitsConfig,
    replay: bool,
    between_tasks: Callable[[int, str, MLP, ExemplarBuffer | None], None],
    progress: Callable[[str], None],
) -> RunResult:
    """Train the tasks in order, with a replay buffer or without (fine-tuning)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    split = load_split(cfg.seed)
    model = MLP(cfg.hidden)
    prefix = "digits-replay" if replay else "digits-finetune"
    buffer = None
    if replay:
        buffer = ExemplarBuffer.open(
            store, f"{prefix}-exemplars", budget=cfg.budget_bytes or default_budget(cfg), model=model,
            policy="fixed_total", selector="herding", seed=cfg.seed,
        )  # fmt: skip
    acc = np.zeros((len(cfg.tasks), len(cfg.tasks)))
    result = RunResult(acc=[])
    for t, classes in enumerate(cfg.tasks):
        table = f"{prefix}-task{t}"
        store.append(table, task_rows(split, t, classes), kind=Kind.TASK_SAMPLES)
        progress(f"{prefix}: task {t + 1}/{len(cfg.tasks)} classes {classes}: scoring difficulty")
        score(
            store, table, "loss", ModelLoss(model.eval(), nn.CrossEntropyLoss(reduction="none"), collate=_loss_inputs),
            columns=["data", "shape", "dtype", "class_id"], description="digits MLP cross-entropy before the task",
        )  # fmt: skip
        ordering = f"{table}-easy-first"
        build_ordering(store, ordering, table, OrderingDefinition(metric="loss", direction="easy_to_hard", seed=cfg.seed))
        progress(f"{prefix}: task {t + 1}/{len(cfg.tasks)}: Ray Train, {cfg.workers} workers")
        state = session.train(
            restart=model if t == 0 else None, table=table, ordering=ordering, replay=buffer.name if buffer is not None and t > 0 else None,
            steps_per_epoch=max(1, store.count(table) // cfg.batch_size), epochs=cfg.epochs, batch_size=cfg.batch_size,
            replay_per_batch=cfg.replay_per_batch, pacing_c0=cfg.pacing_c0, lr=cfg.lr, seed=cfg.seed + t,
        )  # fmt: skip
        model.load_state_dict(state)
        between_tasks(t, table, model, buffer)
        if buffer is not None:
            result.budgets.append(buffer.budget())
        acc[:, t] = evaluate(model, split, cfg.tasks)
    result.acc = [[float(acc[i, j]) for j in range(len(cfg.tasks))] for i in range(len(cfg.tasks))]
    return result


def _loss_inputs(batch: pa.RecordBatch) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = to_tensors(pa.Table.from_batches([batch]))
    return to_input(tensors["data"]), tensors["class_id"]
