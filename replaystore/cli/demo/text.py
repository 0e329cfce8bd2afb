"""GeRe on text: a tiny causal LM learns two text tasks in turn, with and without general replay.

General texts are Python's own docstrings (real English, offline). A tiny GPT-2 is first trained
on 2,000 of them until it is competent (standing in for a pretrained LM), its last-layer states on
the replay samples are distilled into the store as 2-bit zone codes, then it is fine-tuned on
task A (Python source code) and task B (the language reference in `pydoc_data`): plainly, with CE
replay of k general samples per batch, and with CE + the TM margin loss from the store at one or
more margin weights. General-text loss on held-out docstrings shows what was forgotten.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaystore.gere import DynamicWeight, FixedWeight, ReplaySet, causal_lm_loss, combine_losses, distill, replay_losses
from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer
from replaystore.gere.samples import content_hash, ingest
from replaystore.store import Store

CORPUS_DOCSTRINGS, CORPUS_TASK_TEXTS, VOCAB = 2100, 160, 3000  # the tokenizer's corpus, fixed whatever the run's sizes


@dataclass(frozen=True)
class Replay:
    """One text variant: no replay, CE replay, or CE + TM replay with a margin weight."""

    name: str
    replay: bool = True
    weighting: FixedWeight | DynamicWeight | None = None  # None: CE on the replay text only


NO_REPLAY = Replay("fine-tuning", replay=False)
CE_REPLAY = Replay("CE replay")
TM_REPLAY = Replay("TM replay", weighting=FixedWeight(0.1))  # the recommended default (docs/demo.md)
SWEEP = (
    Replay("TM replay, w=1", weighting=FixedWeight(1.0)),
    Replay("TM replay, w=10", weighting=FixedWeight(10.0)),
    Replay("TM replay, dynamic w", weighting=DynamicWeight()),
)


@dataclass
class TextConfig:
    general: int = 2000  # pretraining docstrings
    held_out: int = 100  # general-text loss is measured on these
    replay_samples: int = 2000  # every general docstring, stored and distilled: with half of them replayed,
    # the model relearned that half while its held-out loss stayed up (docs/demo.md)
    task_texts: int = 160
    max_length: int = 48
    pretrain_steps: int = 600
    pretrain_batch: int = 32
    pretrain_lr: float = 5e-3
    task_steps: int = 150
    batch_size: int = 16
    replay_k: int = 16  # general samples per step, as many as the task's rows (with 8, seed 2 ended above its general loss)
    lr: float = 3e-3
    sweep: bool = False  # also the TM weights of SWEEP

    def variants(self) -> list[Replay]:
        return [NO_REPLAY, CE_REPLAY, TM_REPLAY, *(SWEEP if self.sweep else ())]


@dataclass
class TextResult:
    """General-text (held-out docstrings) and task losses, per variant and stage: means over seeds,
    their standard deviations, and each seed's own lists."""

    general_loss: dict[str, list[float]] = field(default_factory=dict)
    task_loss: dict[str, list[float]] = field(default_factory=dict)
    general_loss_std: dict[str, list[float]] = field(default_factory=dict)
    task_loss_std: dict[str, list[float]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: ["before", "after task A", "after task B"])
    pretraining: dict[str, list[float]] = field(default_factory=dict)  # held-out loss before/after, per seed
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    distill: dict[str, Any] = field(default_factory=dict)
    recommended: str = TM_REPLAY.name


def source_chunks(limit: int, lines: int = 6) -> list[str]:
    """Task A: consecutive non-docstring lines of the standard library's code."""
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        code = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("#", '"', "'"))]
        out.extend(" ".join(code[i : i + lines]) for i in range(0, len(code) - lines, lines * 7))
        if len(out) >= limit:
            break
    return out[:limit]


def reference_paragraphs(limit: int) -> list[str]:
    """Task B: paragraphs of the Python language reference shipped in `pydoc_data`."""
    from pydoc_data.topics import topics

    paragraphs = [p.strip() for key in sorted(topics) for p in topics[key].split("\n\n") if len(p.strip()) > 200]
    return paragraphs[:limit]


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(causal_lm_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask))


def _train(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    cfg: TextConfig,
    seed: int,
    variant: Replay = NO_REPLAY,
    replay: ReplaySet | None = None,
) -> None:
    """Task steps; with replay, GeRe's (task CE + replay CE)/2, plus w·TM margin when weighted."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(steps):
        rows = torch.from_numpy(rng.choice(len(ids), size=cfg.batch_size, replace=False))
        out = model(input_ids=ids[rows], attention_mask=mask[rows])
        loss = causal_lm_loss(out.logits, ids[rows], mask[rows])
        if variant.replay and replay is not None:
            replayed = replay_losses(model, replay.next(cfg.replay_k, as_zones=True))
            if variant.weighting is None:
                loss = (loss + replayed.ce) / 2
            else:
                loss = combine_losses(loss, replayed.ce, replayed.margin, variant.weighting)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def pretrain(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, cfg: TextConfig, seed: int) -> None:
    """Make the tiny LM competent at general text first (one-cycle AdamW), so forgetting it is a real loss."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.pretrain_lr, total_steps=cfg.pretrain_steps, pct_start=0.1)
    model.train()
    for _ in range(cfg.pretrain_steps):
        rows = torch.from_numpy(rng.choice(len(ids), size=cfg.pretrain_batch, replace=False))
        loss = causal_lm_loss(model(input_ids=ids[rows], attention_mask=mask[rows]).logits, ids[rows], mask[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


@dataclass
class Corpus:
    general: list[str]
    held_out: list[str]
    tasks: list[list[str]]
    tokenizer: Any


def corpus(cfg: TextConfig) -> Corpus:
    """Docstrings in a fixed shuffled order (held-out ones drawn from the same modules as the rest),
    the two tasks' texts, and a word tokenizer trained on a fixed corpus, so every run's token ids agree."""
    docs = python_docstrings(limit=CORPUS_DOCSTRINGS)
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))]
    task_a, task_b = source_chunks(CORPUS_TASK_TEXTS), reference_paragraphs(CORPUS_TASK_TEXTS)
    tokenizer = word_tokenizer(docs + task_a + task_b, vocab_size=VOCAB)
    held_out = docs[-cfg.held_out :]
    return Corpus(docs[: min(cfg.general, len(docs) - cfg.held_out)], held_out, [task_a[: cfg.task_texts], task_b[: cfg.task_texts]], tokenizer)


def run(store: Store, cfg: TextConfig, data: Corpus, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """One seed: pretrain, distill the replay samples, then each variant from the same pretrained weights."""
    torch.manual_seed(seed)
    tokenizer = data.tokenizer
    model = tiny_causal_lm(len(tokenizer), hidden=64, layers=2, heads=2, positions=cfg.max_length + 8, seed=seed)
    h_ids, h_mask = _encode(tokenizer, data.held_out, cfg.max_length)
    untrained = _loss(model, h_ids, h_mask)
    progress(f"text seed {seed}: pretraining a tiny GPT-2 on {len(data.general)} docstrings")
    pretrain(model, *_encode(tokenizer, data.general, cfg.max_length), cfg, seed)

    progress(f"text seed {seed}: storing {cfg.replay_samples} general samples, distilling zone codes of the frozen model")
    replay_texts = data.general[: cfg.replay_samples]
    ingest(store, replay_texts, source="python-docstrings", tokenizer=tokenizer, max_length=cfg.max_length)
    ids = list(dict.fromkeys(content_hash(t)[:16] for t in replay_texts))
    summary = distill(store, model, tokenizer, precision="zones", batch_size=32, max_length=cfg.max_length, sample_ids=ids)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    tasks = [_encode(tokenizer, t, cfg.max_length) for t in data.tasks]
    out: dict[str, Any] = {
        "seed": seed, "pretraining": [untrained, _loss(model, h_ids, h_mask)], "general_loss": {}, "task_loss": {},
        "distill": {k: summary[k] for k in ("model_fingerprint", "samples", "states_written", "tokens_per_s")},
    }  # fmt: skip
    for variant in cfg.variants():
        model.load_state_dict(frozen)
        replay = ReplaySet.load(store, model, sample_ids=ids, seed=seed) if variant.replay else None
        general, task = [_loss(model, h_ids, h_mask)], []
        for t, (name, (t_ids, t_mask)) in enumerate(zip("AB", tasks)):
            progress(f"text seed {seed}: {variant.name}, task {name}")
            _train(model, t_ids, t_mask, cfg.task_steps, cfg, seed * 10 + t, variant, replay)
            general.append(_loss(model, h_ids, h_mask))
            task.append(_loss(model, t_ids, t_mask))
        out["general_loss"][variant.name], out["task_loss"][variant.name] = general, task
    return out


def run_seeds(store: Store, cfg: TextConfig, seeds: list[int], progress: Callable[[str], None]) -> TextResult:
    """Every seed, then the mean and standard deviation of each loss, stage by stage."""
    progress("text: reading docstrings and code from the standard library, training a word tokenizer")
    data = corpus(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-d model's ops are too small to split; two threads stall on a busy machine
    try:
        runs = [run(store, cfg, data, seed, progress) for seed in seeds]
    finally:
        torch.set_num_threads(threads)
    result = TextResult(per_seed=runs, distill=runs[0]["distill"])
    result.pretraining = {"untrained": [r["pretraining"][0] for r in runs], "pretrained": [r["pretraining"][1] for r in runs]}
    for key, mean, std in (("general_loss", result.general_loss, result.general_loss_std), ("task_loss", result.task_loss, result.task_loss_std)):
        for variant in runs[0][key]:
            values = np.asarray([r[key][variant] for r in runs])
            mean[variant], std[variant] = values.mean(axis=0).tolist(), values.std(axis=0).tolist()
    return result
