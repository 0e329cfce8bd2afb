"""Per-dimension activation statistics in float64, and the TM thresholds derived from them.

Sums and sums of squares are accumulated in float64 (GeRe uses float32) so that 1,000 samples ×
563 tokens lose nothing to rounding; thresholds are handed out as float32, as GeRe's are; the row also lists the samples it covers, which is what makes a resumed
distillation add each sample exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from replaystore.checks import is_finite_number
from replaystore.errors import NotFoundError, ValidationError
from replaystore.gere.fingerprint import check_fingerprint
from replaystore.schemas import Kind
from replaystore.store import Store, Version

STATS_TABLE = Kind.ACTIVATION_STATS.value


def check_k(k: float) -> float:
    if not is_finite_number(k) or k < 0:
        raise ValidationError("k", f"threshold multiplier must be a finite number ≥ 0, got {k!r}")
    return float(k)


@dataclass
class RunningStats:
    """Running float64 sum / sum of squares / count per hidden dimension."""

    hidden_dim: int
    total_sum: np.ndarray
    total_squared_sum: np.ndarray
    count: int = 0
    sample_ids: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, hidden_dim: int) -> RunningStats:
        return cls(hidden_dim, np.zeros(hidden_dim), np.zeros(hidden_dim))

    def update(self, hidden: torch.Tensor, mask: torch.Tensor, sample_ids: list[str]) -> None:
        """Add the unmasked tokens of `hidden` [batch, tokens, dim] (padding never counts)."""
        if hidden.shape[-1] != self.hidden_dim:
            raise ValidationError("hidden_dim", f"statistics hold {self.hidden_dim} dimensions, states have {hidden.shape[-1]}")
        tokens = hidden[mask.to(hidden.device).bool()].to(torch.float64)
        self.total_sum += tokens.sum(0).cpu().numpy()
        self.total_squared_sum += tokens.square().sum(0).cpu().numpy()
        self.count += int(tokens.shape[0])
        self.sample_ids.extend(sample_ids)

    @property
    def mean(self) -> np.ndarray:
        return self.total_sum / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        """Population variance E[x²] − E[x]², clipped at 0 against rounding."""
        return np.maximum(self.total_squared_sum / max(self.count, 1) - self.mean**2, 0.0)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def thresholds(self, k: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """GeRe's per-dimension `(neg, pos) = mean ∓ k·std` as float32 tensors."""
        if self.count == 0:
            raise ValidationError("activation_stats", "no tokens accumulated: distill before asking for thresholds")
        k = check_k(k)
        mean, std = self.mean, self.std
        return torch.from_numpy(mean - k * std).float(), torch.from_numpy(mean + k * std).float()

    def to_row(self, fingerprint: str, layer: int) -> dict[str, Any]:
        return {
            "model_fingerprint": fingerprint,
            "layer": layer,
            "hidden_dim": self.hidden_dim,
            "count": self.count,
            "total_sum": self.total_sum,
            "total_squared_sum": self.total_squared_sum,
            "mean": self.mean,
            "var": self.var,
            "std": self.std,
            "sample_ids": list(self.sample_ids),
        }


STATS_KEYS = ["model_fingerprint", "layer"]


def save_stats(store: Store, stats: RunningStats, fingerprint: str, layer: int, table: str = STATS_TABLE) -> int:
    """Upsert the statistics row of (model, layer) as one commit."""
    row = {name: [value] for name, value in stats.to_row(fingerprint, layer).items()}
    return store.table(table, create=Kind.ACTIVATION_STATS).merge(row, on=STATS_KEYS)


def load_stats(store: Store, fingerprint: str, layer: int, table: str = STATS_TABLE, version: Version | None = None) -> RunningStats:
    """The statistics of (model, layer), or `NotFoundError` when that model was never distilled."""
    check_fingerprint(fingerprint)
    stored = store.find(table, version)
    rows = [] if stored is None else stored.read(filter=f"model_fingerprint = '{fingerprint}' AND layer = {int(layer)}").to_pylist()
    if not rows:
        raise NotFoundError(f"no activation statistics for model {fingerprint} layer {layer} in '{table}'")
    row = rows[0]
    return RunningStats(
        int(row["hidden_dim"]),
        np.asarray(row["total_sum"], dtype=np.float64),
        np.asarray(row["total_squared_sum"], dtype=np.float64),
        int(row["count"]),
        list(row["sample_ids"] or []),
    )
