"""How many times each operation opens a Lance dataset, per table (`python -m benchmarks.opens`).

Not a speed figure: a count, the same on every machine. It spies on `lance.dataset` (the real
function still runs). Run it against an older checkout (`PYTHONPATH=<checkout> python -m
benchmarks.opens`) to compare: docs/store.md keeps both counts.
"""

from __future__ import annotations

import collections
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import lance
import numpy as np

import replaystore
from replaystore.gere import distill, ingest
from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer


def main() -> None:
    counted: collections.Counter[str] = collections.Counter()
    real = lance.dataset

    def spy(uri: Any, *args: Any, **kwargs: Any) -> lance.LanceDataset:
        counted[str(uri).rstrip("/").rsplit("/", 1)[-1].removesuffix(".lance")] += 1
        return real(uri, *args, **kwargs)

    lance.dataset = spy  # type: ignore[assignment]  # a spy for this process only
    store = replaystore.open(tempfile.mkdtemp())
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    buffer = store.exemplars("ex", budget=1_000_000, selector="herding")
    texts = python_docstrings(40)
    tokenizer = word_tokenizer(texts, vocab_size=800)
    model = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64).eval()
    operations: list[tuple[str, Callable[[], object]]] = [
        ("exemplar add, a new class", lambda: buffer.add(0, x, x)),
        ("exemplar add, an existing class", lambda: buffer.add(0, x[:5], x[:5])),
        ("exemplar budget()", buffer.budget),
        ("store.update", lambda: store.update("ex", {"rank": "rank"}, where="class_id = 0")),
        ("store.delete", lambda: store.delete("ex", "sample_id > 100")),
        ("GeRe ingest, 40 texts in 4 chunks", lambda: ingest(store, texts, source="doc", tokenizer=tokenizer, max_length=64, chunk_size=10)),
        ("GeRe distill, 40 samples in batches of 4", lambda: distill(store, model, batch_size=4)),
    ]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"replaystore from {replaystore.__file__} (git HEAD here: {commit})")
    print("| operation | Lance opens | by table |\n|---|---:|---|")
    for name, operation in operations:
        counted.clear()
        operation()
        print(f"| {name} | {sum(counted.values())} | {', '.join(f'{t} {n}' for t, n in sorted(counted.items()))} |")


if __name__ == "__main__":
    main()
