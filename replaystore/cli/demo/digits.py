"""Class-incremental digits: 10 classes in 5 tasks, trained by Ray Train workers from the store.

Each task's images go into a `task_samples` table; the current model scores them (loss) into a
curriculum ordering that paces the start of the task; Ray Train workers (one worker group for every
run, see `training`) stream the task data mixed with a class-balanced share of replay exemplars
from a MEMO-budgeted buffer, and distil the previous model's answers on the old classes; after the
task the distill flow offers the task's images to the buffer (k-center selection on the model's
features, so the kept rows cover each class) and the prune flow keeps it inside its byte budget. Each `Variant` switches one of those parts off (the
ablations); fine-tuning switches replay off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from replaystore.cli.demo.model import MLP, to_input
from replaystore.cli.demo.training import TrainingSession
from replaystore.curriculum import ModelLoss, OrderingDefinition, build_ordering, score
from replaystore.errors import ValidationError
from replaystore.exemplars import ExemplarBuffer, ExemplarSet, model_nbytes, sample_nbytes
from replaystore.exemplars.samples import encode_raw
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.stream import to_tensors

IMAGE_SHAPE = (8, 8)
TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


@dataclass
class DigitsConfig:
    seed: int = 0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    hidden: int = 128
    exemplar_slots: int = 200  # the byte budget is the model's bytes + this many images
    workers: int = 2
    pacing_c0: float = 0.3
    pacing_fraction: float = 0.2  # every row admitted after this share of a task's steps
    distill_weight: float = 2.0
    tasks: list[tuple[int, int]] = field(default_factory=lambda: list(TASKS))


@dataclass(frozen=True)
class Variant:
    """One digits run through the whole system, with some of its parts switched off (an ablation)."""

    name: str
    slug: str  # table prefix
    replay: bool = True
    selector: str = "k_center"  # coverage: measured above herding and random (docs/demo.md)
    pacing: bool = True
    proportional: bool = False
    distill: bool = True


FULL = Variant("replay", "replay")
FINE_TUNING = Variant("fine-tuning", "finetune", replay=False, distill=False)
ABLATIONS = (
    Variant("replay, herding selection", "herding", selector="herding"),
    Variant("replay, random selection", "random", selector="random"),
    Variant("replay, no pacing", "nopacing", pacing=False),
    Variant("replay, proportional mixing", "proportional", proportional=True),
    Variant("replay, no distillation", "nodistill", distill=False),
)


def rank_batch(cfg: DigitsConfig) -> int:
    """Each worker's share of the global batch: the stream's batch size is per rank, so passing the
    global size would double the batch (and halve the replay share) with two workers."""
    if cfg.batch_size % cfg.workers:
        raise ValidationError("workers", f"must divide the global batch of {cfg.batch_size}, got {cfg.workers}")
    return cfg.batch_size // cfg.workers


def replay_share(cfg: DigitsConfig, old_classes: int, new_classes: int) -> int:
    """Replay rows per global batch: the old classes' share of the classes seen, so every class seen
    so far gets about the same number of rows per batch (a fixed k starves them as they multiply)."""
    return round(cfg.batch_size * old_classes / (old_classes + new_classes))


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


def byte_budget(cfg: DigitsConfig) -> int:
    """MEMO's budget: the model's bytes count too, plus `exemplar_slots` images."""
    model = MLP(cfg.hidden)
    return model_nbytes(model) + cfg.exemplar_slots * sample_nbytes(IMAGE_SHAPE, np.dtype(np.uint8))


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
    return per_task(pred, split, tasks)


def per_task(pred: np.ndarray, split: Split, tasks: list[tuple[int, int]]) -> list[float]:
    return [float((pred[m] == split.test_y[m]).mean()) for m in (np.isin(split.test_y, c) for c in tasks)]


def nme_accuracy(model: MLP, exemplars: ExemplarSet, split: Split, tasks: list[tuple[int, int]]) -> list[float]:
    """iCaRL's nearest-mean-of-exemplars classifier: each test image takes the class whose mean
    (L2-normalised) feature over the buffer's exemplars is nearest, ignoring the network's head."""
    x, y = exemplars.torch()
    classes = sorted(set(y.tolist()))
    model.eval()
    with torch.no_grad():
        feats = F.normalize(model.features(to_input(x)), dim=1)
        means = F.normalize(torch.stack([feats[y == c].mean(0) for c in classes]), dim=1)
        test = F.normalize(model.features(to_input(torch.from_numpy(split.test_x))), dim=1)
        pred = np.asarray(classes)[(test @ means.T).argmax(1).numpy()]
    return per_task(pred, split, tasks)


@dataclass
class RunResult:
    """Accuracy matrix `acc[i][j]`: task i's test accuracy after training task j."""

    acc: list[list[float]]
    budgets: list[dict[str, Any]] = field(default_factory=list)
    nme: list[float] | None = None  # per task at the end, nearest-mean-of-exemplars

    @property
    def average_accuracy(self) -> float:
        return float(np.mean([row[-1] for row in self.acc]))

    @property
    def nme_average(self) -> float | None:
        return None if self.nme is None else float(np.mean(self.nme))

    @property
    def forgetting(self) -> float:
        """Mean over all but the last task of (best accuracy ever − final accuracy)."""
        t = len(self.acc)
        if t < 2:
            return 0.0
        return float(np.mean([max(self.acc[i][i : t - 1]) - self.acc[i][-1] for i in range(t - 1)]))


def run(
    store: Store,
    session: TrainingSession,
    cfg: DigitsConfig,
    variant: Variant,
    between_tasks: Callable[[int, str, MLP, ExemplarBuffer | None], None],
    progress: Callable[[str], None],
) -> RunResult:
    """Train the tasks in order through the whole system, with the variant's parts."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    split = load_split(cfg.seed)
    model = MLP(cfg.hidden)
    prefix = f"digits-{variant.slug}-s{cfg.seed}"
    buffer = None
    if variant.replay:
        buffer = ExemplarBuffer.open(
            store, f"{prefix}-exemplars", budget=byte_budget(cfg), model=model,
            policy="fixed_total", selector=variant.selector, seed=cfg.seed,
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
        old = tuple(c for seen in cfg.tasks[:t] for c in seen)
        state = session.train(
            restart=model if t == 0 else None, table=table, ordering=ordering, replay=buffer.name if buffer is not None and t > 0 else None,
            steps_per_epoch=max(1, store.count(table) // cfg.batch_size), epochs=cfg.epochs, batch_size=rank_batch(cfg),
            replay_per_batch=replay_share(cfg, len(old), len(classes)), pacing_c0=cfg.pacing_c0 if variant.pacing else None,
            pacing_fraction=cfg.pacing_fraction, proportional=variant.proportional, distill_classes=old if variant.distill else (),
            distill_weight=cfg.distill_weight, lr=cfg.lr, seed=cfg.seed + t,
        )  # fmt: skip
        model.load_state_dict(state)
        between_tasks(t, table, model, buffer)
        if buffer is not None:
            result.budgets.append(buffer.budget())
        acc[:, t] = evaluate(model, split, cfg.tasks)
    result.acc = [[float(acc[i, j]) for j in range(len(cfg.tasks))] for i in range(len(cfg.tasks))]
    if buffer is not None:
        result.nme = nme_accuracy(model, buffer.samples(), split, cfg.tasks)
    return result


def _loss_inputs(batch: pa.RecordBatch) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = to_tensors(pa.Table.from_batches([batch]))
    return to_input(tensors["data"]), tensors["class_id"]
