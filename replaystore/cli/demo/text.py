"""GeRe on text: a tiny causal LM learns two text tasks in turn, with and without general replay.

General texts are Python's own docstrings (real English, offline). A tiny GPT-2 is first trained
on them (standing in for a pretrained LM), its last-layer states are distilled into the store as
2-bit zone codes, then it is fine-tuned on task A (Python source code) and task B (the language
reference in `pydoc_data`), once plainly and once replaying k general samples per batch with the
TM margin loss from the store. General-text loss on held-out docstrings shows what was forgotten.
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

from replaystore.gere import DynamicWeight, ReplaySet, causal_lm_loss, combine_losses, distill, replay_losses
from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer
from replaystore.gere.samples import ingest
from replaystore.store import Store


@dataclass
class TextConfig:
    seed: int = 0
    general: int = 240
    held_out: int = 60
    task_texts: int = 160
    max_length: int = 48
    pretrain_steps: int = 250
    task_steps: int = 120
    batch_size: int = 16
    replay_k: int = 4
    lr: float = 3e-3


@dataclass
class TextResult:
    """General-text (held-out docstrings) and task losses, per variant and stage."""

    general_loss: dict[str, list[float]] = field(default_factory=dict)
    task_loss: dict[str, list[float]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: ["before", "after task A", "after task B"])
    distill: dict[str, Any] = field(default_factory=dict)


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
    replay: ReplaySet | None = None,
) -> None:
    """Plain causal-LM steps; with a replay set, GeRe's (task CE + replay CE)/2 + w·TM margin."""
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(steps):
        rows = torch.from_numpy(rng.choice(len(ids), size=cfg.batch_size, replace=False))
        out = model(input_ids=ids[rows], attention_mask=mask[rows])
        loss = causal_lm_loss(out.logits, ids[rows], mask[rows])
        if replay is not None:
            replayed = replay_losses(model, replay.next(cfg.replay_k, as_zones=True))
            loss = combine_losses(loss, replayed.ce, replayed.margin, DynamicWeight())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def run(store: Store, cfg: TextConfig, progress: Callable[[str], None]) -> TextResult:
    torch.manual_seed(cfg.seed)
    docs = python_docstrings(limit=cfg.general + cfg.held_out)
    general, held_out = docs[: cfg.general], docs[cfg.general :]
    task_a, task_b = source_chunks(cfg.task_texts), reference_paragraphs(cfg.task_texts)
    tokenizer = word_tokenizer(general + held_out + task_a + task_b, vocab_size=3000)
    model = tiny_causal_lm(len(tokenizer), hidden=64, layers=2, heads=2, positions=cfg.max_length + 8, seed=cfg.seed)

    progress(f"text: pretraining a tiny GPT-2 on {len(general)} docstrings (stands in for a pretrained LM)")
    g_ids, g_mask = _encode(tokenizer, general, cfg.max_length)
    _train(model, g_ids, g_mask, cfg.pretrain_steps, cfg)

    progress("text: storing general samples and distilling zone codes of the frozen model")
    ingest(store, general, source="python-docstrings", tokenizer=tokenizer, max_length=cfg.max_length)
    summary = distill(store, model, tokenizer, precision="zones", batch_size=32, max_length=cfg.max_length)
    result = TextResult(distill={k: summary[k] for k in ("model_fingerprint", "samples", "states_written", "tokens_per_s")})
    replay = ReplaySet.load(store, model, seed=cfg.seed)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}

    h_ids, h_mask = _encode(tokenizer, held_out, cfg.max_length)
    tasks = [_encode(tokenizer, t, cfg.max_length) for t in (task_a, task_b)]
    for variant, use_replay in (("fine-tuning", False), ("TM replay", True)):
        model.load_state_dict(frozen)
        result.general_loss[variant] = [_loss(model, h_ids, h_mask)]
        result.task_loss[variant] = []
        for name, (ids, mask) in zip("AB", tasks):
            progress(f"text: {variant}, task {name}")
            _train(model, ids, mask, cfg.task_steps, cfg, replay if use_replay else None)
            result.general_loss[variant].append(_loss(model, h_ids, h_mask))
            result.task_loss[variant].append(_loss(model, ids, mask))
    return result
