"""Small rows for every table kind, written through `Store.append`, shared by the SQL tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

import replaystore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIM = 4


def exemplar_rows() -> list[dict[str, Any]]:
    # 3 classes: class c has c + 2 exemplars of 3,072 bytes (CIFAR images), ranks 1..n
    return [
        {"buffer": "cifar", "sample_id": 100 * c + r, "class_id": c, "task_id": c // 2, "rank": r, "nbytes": 3072,
         "data": bytes([c, r]), "shape": [32, 32, 3], "dtype": "uint8", "added_at": T0 + timedelta(minutes=r)}
        for c in range(3) for r in range(1, c + 3)
    ]  # fmt: skip


def experience_rows() -> list[dict[str, Any]]:
    # freq/utility pairs: ids e0..e4; e1 and e3 were retrieved ≥ 5 times and never helped
    counters = [(1, 1), (6, 0), (2, 0), (9, 0), (5, 5)]
    return [
        {"experience_id": f"e{i}", "workspace": "ws", "kind": "success" if i % 2 == 0 else "failure",
         "when_to_use": f"when {i}", "content": f"lesson {i}", "embedding": np.full(DIM, i, np.float32),
         "freq": f, "utility": u, "tags": ["a", str(i)]}
        for i, (f, u) in enumerate(counters)
    ]  # fmt: skip


def fill(store: replaystore.Store) -> None:
    """One append per table kind (two for curriculum_scores, so time travel has a past)."""
    store.append("exemplars", exemplar_rows())
    store.append("experiences", experience_rows(), params={"embedding_dim": DIM})
    store.append("general_samples", [
        {"sample_id": f"g{i}", "source": "docstrings", "text": "x" * (10 * i), "token_ids": list(range(i)),
         "token_count": i, "content_hash": f"h{i}", "tokenizer": "gpt2"}
        for i in range(1, 5)
    ])  # fmt: skip
    store.append("activation_stats", [
        {"model_fingerprint": "m1", "layer": layer, "hidden_dim": 2, "count": 10 * layer, "total_sum": [1.0, 2.0],
         "total_squared_sum": [1.0, 4.0], "mean": [0.1, 0.2], "var": [0.01, 0.02], "std": [0.1, 0.14]}
        for layer in (1, 2)
    ])  # fmt: skip
    store.append("activation_states", [
        {"sample_id": f"g{i}", "model_fingerprint": "m1", "layer": 2, "precision": p, "token_count": i, "hidden_dim": 2,
         "states": b"\x00" * (8 * i)}
        for i, p in [(1, "float32"), (2, "float16"), (3, "float16")]
    ])  # fmt: skip
    store.append("curriculum_scores", [
        {"source": "docstrings", "sample_id": f"g{i}", "metric": "length", "value": float(10 * i), "percentile": i / 4}
        for i in range(1, 5)
    ])  # fmt: skip
    store.append("curriculum_orderings", [
        {"ordering": "by-length", "source": "docstrings", "sample_id": f"g{i}", "position": i - 1, "difficulty": i / 4,
         "definition": '{"metric": "length"}'}
        for i in range(1, 5)
    ])  # fmt: skip
    store.append("priorities", [{"source": "docstrings", "sample_id": f"g{i}", "priority": 0.5 * i} for i in range(1, 5)])
