"""Batches from rows already read: pure functions from numpy pieces to dicts of tensors.

The stream decides which rows each step takes (`plan`, samplers) and reads them (`snapshots`); this
module only shapes what was read into batches, so it can be tested and profiled on arrays alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from replaystore.stream.snapshots import MAX_READ_AHEAD
from replaystore.stream.sources import CHUNK_BYTES
from replaystore.stream.tensors import as_tensors, concat, cut, join, rows_of, same_columns, spans

Cell = tuple[np.ndarray, np.ndarray | None]  # one (source, step)'s positions and importance weights
Built = list[tuple[int, dict[str, Any] | None]]  # (step, batch or None where this rank has no rows)


class Batch(dict[str, Any]):
    """What the stream yields: column name → tensor (string columns stay lists). `to(device)` moves
    every tensor, so `batch.to(device)` works whatever columns a source projects."""

    def to(self, device: str | torch.device, non_blocking: bool = False) -> Batch:
        return Batch({k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def meta(cells: list[tuple[int, np.ndarray, np.ndarray | None]]) -> dict[str, np.ndarray]:
    """Per row of (source, positions, weights) cells in batch order: its source, its position in the
    source's snapshot and its importance weight (1 unless the sampler gives one). Built once per
    chunk and split per batch: built per batch it was a fifth of a single-source epoch's Python calls."""
    counts = [len(pos) for _, pos, _ in cells]
    weights = [w for _, _, w in cells]
    return {
        "_source": np.repeat(np.array([i for i, _, _ in cells], dtype=np.int16), counts),
        "_position": np.concatenate([pos for _, pos, _ in cells]),
        "_weight": np.ones(sum(counts), np.float32)
        if all(w is None for w in weights)
        else np.concatenate([np.ones(n, np.float32) if w is None else w.astype(np.float32) for n, w in zip(counts, weights)]),
    }


def split(value: Any, rows: list[int]) -> Sequence[Any]:
    """Consecutive runs of `rows` rows of a tensor (one call for all views) or of a list."""
    if isinstance(value, torch.Tensor):
        return value.split_with_sizes(rows)
    bounds = np.concatenate(([0], np.cumsum(rows))).tolist()
    return [value[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def chunk_steps(built: Built) -> int:
    """Steps per chunk that make about `CHUNK_BYTES`, from the bytes of the batches just built."""
    size = sum(v.nbytes for _, batch in built if batch for v in batch.values() if isinstance(v, torch.Tensor))
    per_step = max(size / len(built), 1.0)
    return int(min(MAX_READ_AHEAD, max(1, CHUNK_BYTES // per_step)))


def batches(steps: list[int], drawn: list[list[Cell]], pieces: list[list[dict[str, Any]]], pin_memory: bool) -> Built:
    """The batches of `steps` from each source's pieces (read in step order) and the cells drawn."""
    sources = len(pieces)
    sizes = [[len(d[i][0]) for d in drawn] for i in range(sources)]
    rows = [sum(step) for step in zip(*sizes)]
    cells = [(i, *cell) for step in drawn for i, cell in enumerate(step)]
    if len(steps) == 1 and len(pieces) == 1 and len(pieces[0]) == 1 and rows[0]:  # prioritized and curriculum
        # steps come one per chunk: the one piece read is the batch, with nothing to cut or split
        return [(steps[0], {**finish(pieces[0], pin_memory), **as_tensors(meta(cells), pin_memory)})]
    columns = {key: split(value, rows) for key, value in as_tensors(meta(cells), pin_memory).items()}
    first = next((p for source in pieces for p in source), {})
    if sources > 1 and not any(key.endswith("_lengths") for key in first):  # padded widths stay per batch
        return _mixture(steps, pieces, sizes, rows, columns, pin_memory)
    runs = [cut(pieces[i], sizes[i]) for i in range(sources)]  # per source: each step's views
    out: Built = []
    for k, step in enumerate(steps):
        parts = [view for i in range(sources) for view in runs[i][k]]
        out.append((step, {**finish(parts, pin_memory), **{key: value[k] for key, value in columns.items()}} if parts else None))
    return out


def _mixture(
    steps: list[int], pieces: list[list[dict[str, Any]]], sizes: list[list[int]], rows: list[int], meta_columns: dict[str, Sequence[Any]], pin_memory: bool
) -> Built:
    """A mixture's chunk with fixed-width columns: every column copied once for the whole chunk,
    batch after batch and source after source, and each batch a slice of it (few large copies
    instead of one small copy per batch, source and column). The runs are worked out once per source
    and applied to each column's arrays (a dict of views per run cost more than the slicing)."""
    runs = [spans([rows_of(p) for p in pieces[i]], sizes[i]) for i in range(len(pieces))]
    order = [(i, j, a, b) for k in range(len(steps)) for i, run in enumerate(runs) for j, a, b in run[k]]
    if not order:
        return [(step, None) for step in steps]
    keys = same_columns([source[0] for source in pieces if source])
    if len(order) == 1:
        i, j, a, b = order[0]
        data = {key: pieces[i][j][key][a:b] for key in keys}
    else:
        data = {key: join([pieces[i][j][key][a:b] for i, j, a, b in order], pin_memory) for key in keys}
    parts = {**{key: split(value, rows) for key, value in as_tensors(data, pin_memory).items()}, **meta_columns}
    return [(step, {key: value[k] for key, value in parts.items()} if rows[k] else None) for k, step in enumerate(steps)]


def finish(parts: list[dict[str, Any]], pin_memory: bool) -> dict[str, Any]:
    """One batch's columns: a single piece stays a view; several are copied once, straight into place.
    Padded columns are cut to the batch's own longest row (a piece is padded to its read's)."""
    batch = dict(parts[0]) if len(parts) == 1 else concat(parts, pin_memory)
    for key in [k for k in batch if f"{k}_lengths" in batch]:
        lengths = batch[f"{key}_lengths"]
        batch[key] = batch[key][:, : int(lengths.max()) if len(lengths) else 0]
    return as_tensors(batch, pin_memory)
