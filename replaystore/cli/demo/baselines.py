"""The two digits runs that bracket the system, in plain torch in one process (no store, no Ray).

The plain loop is what a user would write without replaystore: the same MLP, a few random
exemplars per class concatenated to each task's data, Adam. Joint training sees every task's data
so far at each task: the upper bound a replay method approaches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from replaystore.cli.demo.digits import MLP, DigitsConfig, RunResult, evaluate, load_split
from replaystore.cli.demo.model import to_input

PLAIN_LR = 1e-3
PLAIN_EPOCHS = 30


def _fit(model: MLP, x: np.ndarray, y: np.ndarray, optimizer: torch.optim.Optimizer, epochs: int, batch: int, rng: np.random.Generator) -> None:
    inputs, labels = to_input(torch.from_numpy(x)), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for rows in order.split(batch):
            loss = F.cross_entropy(model(inputs[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def plain_loop(cfg: DigitsConfig) -> RunResult:
    """Each task's data plus `exemplar_slots / 10` random exemplars of every class seen, Adam lr 1e-3,
    30 epochs: the same exemplar budget as the buffer, spent evenly over the 10 classes (at least
    one per class, so a budget under 10 gives the plain loop more than the buffer)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    split, model = load_split(cfg.seed), MLP(cfg.hidden)
    per_class = max(1, cfg.exemplar_slots // 10)
    memory = np.zeros(0, dtype=np.int64)  # rows of split.train_*
    acc = np.zeros((len(cfg.tasks), len(cfg.tasks)))
    for t, classes in enumerate(cfg.tasks):
        rows = np.concatenate([np.nonzero(np.isin(split.train_y, classes))[0], memory])
        optimizer = torch.optim.Adam(model.parameters(), lr=PLAIN_LR)  # a fresh optimizer per task, as a user would
        _fit(model, split.train_x[rows], split.train_y[rows], optimizer, PLAIN_EPOCHS, cfg.batch_size, rng)
        picks = [rng.choice(np.nonzero(split.train_y == c)[0], size=per_class, replace=False) for c in classes]
        memory = np.concatenate([memory, *picks])
        acc[:, t] = evaluate(model, split, cfg.tasks)
    return RunResult(acc=acc.tolist())


def joint(cfg: DigitsConfig) -> RunResult:
    """Every task's data so far at each task, the system's optimizer and epochs: the upper bound."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    split, model = load_split(cfg.seed), MLP(cfg.hidden)
    acc = np.zeros((len(cfg.tasks), len(cfg.tasks)))
    for t in range(len(cfg.tasks)):
        rows = np.nonzero(np.isin(split.train_y, [c for seen in cfg.tasks[: t + 1] for c in seen]))[0]
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
        _fit(model, split.train_x[rows], split.train_y[rows], optimizer, cfg.epochs, cfg.batch_size, rng)
        acc[:, t] = evaluate(model, split, cfg.tasks)
    return RunResult(acc=acc.tolist())
