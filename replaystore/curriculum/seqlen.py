"""DeepSpeed's single-cluster curriculum: every row admitted, token columns cut to the difficulty.

For a `clustering_type: single_cluster` metric DeepSpeed admits every sample; the difficulty acts
only through Megatron-DeepSpeed's `data_post_process`, and only for the metrics named
`seqlen_truncate` (keep the first `difficulty` tokens of each row) and `seqlen_reshape` (cut the
rows into `difficulty`-token rows, keeping the global batch's token count). `SeqlenCurriculum` holds
that schedule and applies it to one batch dict (numpy arrays or torch tensors, 2-D token columns,
optional `<column>_lengths` as the stream hands out); `truncate` and `reshape` are the pure
functions. Steps count global batches from 0 (see `replaystore.curriculum.deepspeed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replaystore.curriculum.pacing import check_discrete
from replaystore.errors import ValidationError

MODES = ("truncate", "reshape", "none")
DEFAULT_COLUMNS = ("input_ids", "attention_mask", "labels")


def _present(batch: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    return [name for name in columns if name in batch]


def truncate(batch: Mapping[str, Any], width: int, columns: Sequence[str] = DEFAULT_COLUMNS) -> dict[str, Any]:
    """Keep the first `width` tokens of every row of `columns` (Megatron's `seqlen_truncate`).

    `<column>_lengths` entries are lowered to at most `width`; other entries are unchanged.
    """
    out = dict(batch)
    for name in _present(batch, columns):
        if out[name].shape[1] > width:
            out[name] = out[name][:, :width]
        if f"{name}_lengths" in out:
            out[f"{name}_lengths"] = out[f"{name}_lengths"].clip(max=width)
    return out


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch  # a torch batch: torch is already loaded

    return torch.cat(parts)


def _reshape_rows(x: Any, width: int) -> Any:
    """Megatron-DeepSpeed's seqlen_reshape of one `[rows, tokens]` column (pretrain_gpt.data_post_process)."""
    total = x.shape[0] * x.shape[1]
    whole = (x.shape[1] // width) * width
    cut = _cat([x[:, :whole].reshape(-1, width), x[:, -width:]])
    rows = min(math.ceil(total / width), cut.shape[0])
    if rows > 1 and rows % 2:
        rows -= 1
    return cut[:rows]


def reshape(batch: Mapping[str, Any], width: int, columns: Sequence[str] = DEFAULT_COLUMNS) -> dict[str, Any]:
    """Cut the rows of `columns` into `width`-token rows (Megatron's `seqlen_reshape`).

    Meant for packed rows (no padding), as in Megatron's GPT data; with `<column>_lengths` the new
    lengths count the real tokens in each new row. The row count changes, so per-row entries that
    are not token columns (ids, labels of a classifier) no longer line up and are left out.
    """
    present = _present(batch, columns)
    if not present or batch[present[0]].shape[1] <= width:
        return dict(batch)
    out: dict[str, Any] = {}
    for name in present:
        x = batch[name]
        out[name] = _reshape_rows(x, width)
        lengths = batch.get(f"{name}_lengths")
        if lengths is not None:
            positions = np.arange(x.shape[1])[None, :]
            real = positions < np.asarray(lengths)[:, None]
            counts = _reshape_rows(real, width).sum(1)
            out[f"{name}_lengths"] = counts if isinstance(lengths, np.ndarray) else lengths.new_tensor(counts)
    return out


@dataclass(frozen=True)
class SeqlenCurriculum:
    """A single-cluster DeepSpeed metric: `difficulties[i]` while step ≤ `steps[i]`, applied by `mode`.

    `mode` "none" is a single-cluster metric DeepSpeed does not act on (any name but
    seqlen_truncate / seqlen_reshape): batches pass unchanged. `extra_tokens` = 1 keeps
    Megatron's `text` layout (difficulty + 1 tokens, the last one only a label).
    """

    metric: str
    mode: str
    difficulties: tuple[float, ...]
    steps: tuple[int, ...]
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    extra_tokens: int = 0
    imported_from: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValidationError("mode", f"must be one of {list(MODES)}, got {self.mode!r}")
        diffs, steps = check_discrete(self.difficulties, self.steps, upper=None, field="difficulties")
        if self.mode != "none" and not all(d >= 1 and float(d).is_integer() for d in diffs):
            raise ValidationError("difficulties", f"sequence lengths must be whole numbers ≥ 1, got {list(diffs)}")
        object.__setattr__(self, "difficulties", diffs)
        object.__setattr__(self, "steps", steps)
        if isinstance(self.columns, str) or not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ValidationError("columns", f"must be a non-empty list of column names, got {self.columns!r}")
        object.__setattr__(self, "columns", tuple(self.columns))
        if not isinstance(self.extra_tokens, int) or isinstance(self.extra_tokens, bool) or self.extra_tokens < 0:
            raise ValidationError("extra_tokens", f"must be an integer ≥ 0, got {self.extra_tokens!r}")

    def difficulty(self, step: int) -> float:
        """The difficulty (a sequence length for truncate/reshape) at `step` (0 = the first global batch)."""
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ValidationError("step", f"must be an integer ≥ 0, got {step!r}")
        return self.difficulties[int(np.searchsorted(np.asarray(self.steps), step, side="left"))]

    def __call__(self, batch: Mapping[str, Any], step: int) -> dict[str, Any]:
        """`batch` with its token columns cut to the difficulty of `step` (every row stays admitted)."""
        width = int(self.difficulty(step)) + self.extra_tokens
        if self.mode == "truncate":
            return truncate(batch, width, self.columns)
        if self.mode == "reshape":
            return reshape(batch, width, self.columns)
        return dict(batch)

    def apply_to(self, batches: Iterable[Mapping[str, Any]], start_step: int = 0) -> Iterator[dict[str, Any]]:
        """Each batch of `batches` (a ReplayStream, a DataLoader) cut at its step: start_step, start_step + 1, …"""
        for step, batch in enumerate(batches, start_step):
            yield self(batch, step)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "mode": self.mode,
            "difficulties": list(self.difficulties),
            "steps": list(self.steps),
            "columns": list(self.columns),
            "extra_tokens": self.extra_tokens,
        }
        if self.imported_from is not None:
            out["imported_from"] = dict(self.imported_from)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SeqlenCurriculum:
        known = {"metric", "mode", "difficulties", "steps", "columns", "extra_tokens", "imported_from"}
        if not isinstance(spec, Mapping) or not {"metric", "mode", "difficulties", "steps"} <= set(spec) or set(spec) - known:
            raise ValidationError(
                "seqlen_curriculum", f"must be a mapping with metric, mode, difficulties, steps (optional: columns, extra_tokens), got {spec!r:.80}"
            )
        return cls(
            spec["metric"],
            spec["mode"],
            tuple(spec["difficulties"]),
            tuple(spec["steps"]),
            tuple(spec.get("columns", DEFAULT_COLUMNS)),
            spec.get("extra_tokens", 0),
            spec.get("imported_from"),
        )
