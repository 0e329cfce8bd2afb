"""GeReTrainer: transformers.Trainer replaying general samples from the store beside task data."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from replaystore import Store
from replaystore.gere import FixedWeight, ReplaySet, distill, ingest, replay_losses
from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer
from replaystore.gere.trainer import GeReTrainer, ReplaySchedule

torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU


class TaskTexts(torch.utils.data.Dataset):
    """Fixed-length causal-LM examples cut from one task's texts."""

    def __init__(self, tokenizer, texts: list[str], length: int = 16) -> None:
        ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
        self.chunks = [ids[s : s + length] for s in range(0, len(ids) - length + 1, length)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.chunks[i])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return python_docstrings(60)


@pytest.fixture
def setup(store: Store, corpus: list[str]) -> tuple[torch.nn.Module, ReplaySet, TaskTexts]:
    tokenizer = word_tokenizer(corpus, vocab_size=600)
    model = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64, seed=1)
    ingest(store, corpus[:8], source="pydoc", tokenizer=tokenizer, max_length=24)
    distill(store, model, precision="zones", batch_size=8)
    replay = ReplaySet.load(store, model)
    task = TaskTexts(tokenizer, [t.upper() + " " + t[::-1] for t in corpus[30:60]])  # far from the general text
    return model, replay, task


def arguments(tmp_path: Path, **overrides) -> TrainingArguments:
    settings = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "per_device_train_batch_size": 2,
        "learning_rate": 3e-3,
        "seed": 0,
    }
    return TrainingArguments(**{**settings, **overrides})


def test_exactly_k_replay_samples_per_global_batch(tmp_path: Path, setup) -> None:
    model, replay, task = setup
    trainer = GeReTrainer(
        model=model,
        args=arguments(tmp_path, gradient_accumulation_steps=2, max_steps=3),
        train_dataset=task,
        replay=replay,
        schedule=ReplaySchedule(k=3),
    )
    trainer.train()
    per_step = Counter()
    for entry in trainer.replay_log:
        per_step[entry["step"]] += entry["replayed"]
    assert dict(per_step) == {0: 3, 1: 3, 2: 3}
    assert all(torch.isfinite(torch.tensor(e["margin"])) for e in trainer.replay_log)


def test_mixing_proportion_replays_that_share_of_samples(tmp_path: Path, setup) -> None:
    model, replay, task = setup
    trainer = GeReTrainer(
        model=model,
        args=arguments(tmp_path, max_steps=4),
        train_dataset=task,
        replay=replay,
        schedule=ReplaySchedule(proportion=0.2),
    )
    trainer.train()
    assert sum(e["replayed"] for e in trainer.replay_log) == 2  # 8 task samples × 0.2/0.8


def general_losses(model: torch.nn.Module, replay: ReplaySet) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        parts = replay_losses(model, replay.batch(replay.sample_ids))
    return parts.ce.item(), parts.margin.item()


def test_replay_keeps_general_activations_closer_than_plain_fine_tuning(tmp_path: Path, setup) -> None:
    model, replay, task = setup
    plain, replayed = copy.deepcopy(model), copy.deepcopy(model)
    args = arguments(tmp_path, max_steps=25, learning_rate=1e-2)
    Trainer(model=plain, args=args, train_dataset=task).train()
    GeReTrainer(model=replayed, args=args, train_dataset=task, replay=replay, schedule=ReplaySchedule(k=2), weighting=FixedWeight(10.0)).train()
    _, plain_margin = general_losses(plain, replay)
    _, replay_margin = general_losses(replayed, replay)
    assert replay_margin < 0.7 * plain_margin
