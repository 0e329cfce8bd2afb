"""GeRe states: bytes per sample for each precision, and distillation throughput, vs GeRe's own way.

The peer is what the GeRe code does: one forward pass per sample and one float32 `.pt` file per
sample (`torch.save` of `hidden_states[-1]`), statistics accumulated beside it. Ours is
`replaystore.gere.distill` into Lance tables: batched, right-padded, committed per batch,
statistics in float64. Both run the pretrained MiniLM (all-MiniLM-L6-v2, shipped offline) over
the same general texts (Python docstrings joined to about GeRe's length; MiniLM caps them at 512
tokens) in the same run. Scale 1.0 = GeRe's 1,000 samples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel

import replaystore
from benchmarks.common import Result, cli, timer
from replaystore.gere import distill, ingest, read_samples
from replaystore.gere.offline import minilm_path, minilm_tokenizer, python_docstrings

SAMPLES = 1000
TEXT_CHARS = 1500
MAX_LENGTH = 512  # MiniLM's position limit (GeRe uses 563 with 7B models)
BATCH_SIZE = 16
PEER = "GeRe: per-sample forward + float32 .pt"


def general_texts(n: int) -> list[str]:
    """`n` texts of about TEXT_CHARS characters, each made of consecutive stdlib docstrings."""
    texts, current = [], ""
    for doc in python_docstrings(100_000, min_chars=100):
        current = f"{current}\n\n{doc}" if current else doc
        if len(current) >= TEXT_CHARS:
            texts.append(current)
            current = ""
            if len(texts) == n:
                return texts
    raise RuntimeError(f"only {len(texts)} general texts of {TEXT_CHARS} characters in this Python's stdlib")


def gere_peer(model: Any, token_ids: list[list[int]], folder: Path) -> tuple[float, int]:
    """GeRe's loop: each sample alone through the model, its last hidden states saved as a .pt file."""
    hidden = model.config.hidden_size
    total, squares, count = torch.zeros(hidden, dtype=torch.float64), torch.zeros(hidden, dtype=torch.float64), 0
    with timer() as elapsed, torch.inference_mode():
        for i, ids in enumerate(token_ids):
            states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
            torch.save(states.clone(), folder / f"{i}.pt")
            total += states.double().sum(0)
            squares += states.double().square().sum(0)
            count += states.shape[0]
        mean = total / count
        torch.save({"mean": mean, "var": squares / count - mean**2, "count": count}, folder / "stats.pt")
    return elapsed(), sum(p.stat().st_size for p in folder.glob("[0-9]*.pt"))


def run(scale: float = 1.0) -> list[Result]:
    n = max(4, int(SAMPLES * scale))
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    tokenizer = minilm_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        store = replaystore.open(f"{tmp}/store")
        ingest(store, general_texts(n), source="python-docstrings", tokenizer=tokenizer, max_length=MAX_LENGTH)
        token_ids = read_samples(store).column("token_ids").to_pylist()
        tokens = sum(len(ids) for ids in token_ids)
        peer_folder = Path(tmp) / "gere_pt"
        peer_folder.mkdir()
        peer_seconds, peer_bytes = gere_peer(model, token_ids, peer_folder)
        results = []
        for precision in ("float32", "float16", "bfloat16", "zones"):
            table = f"states_{precision}"
            summary = distill(store, model, precision=precision, batch_size=BATCH_SIZE, states_table=table)
            store.compact(table)
            ours_bytes = store.info(table).bytes
            results.append(
                Result(
                    "gere",
                    f"states {precision}, {n} samples",
                    "bytes per sample",
                    ours_bytes / n,
                    peer_bytes / n,
                    PEER,
                    False,
                    notes=f"{tokens / n:.0f} tokens × 384 dims per sample; Lance table incl. ids and metadata",
                )
            )
            if precision == "float32":
                results.append(
                    Result(
                        "gere",
                        f"distill float32, {n} samples",
                        "tokens/s",
                        summary["tokens_per_s"],
                        tokens / peer_seconds,
                        PEER,
                        True,
                        notes=f"MiniLM, batch {BATCH_SIZE}, torch threads {torch.get_num_threads()}, includes statistics and commits",
                    )
                )
        return results


if __name__ == "__main__":
    cli(run)
