"""Per-sample losses out of training, priorities back into the store — in one batched write.

Training loops (a torch loop or Ray Train workers) log `(source, version, position, loss)` for the
rows they trained on; nothing is written from inside the loop. After the run, `write_priorities`
maps positions to the sample ids of the exact version that was read and upserts
`priority = |loss| + eps` into the `priorities` table in one merge (one Lance version). The next
epoch of a prioritized source starts from those priorities (`load_priorities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from replaystore.errors import ValidationError
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.stream.sources import ArrowSource, LanceBacked, Source, StoreSource

PRIORITIES = Kind.PRIORITIES.value
_LOG_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("version", pa.int64()),
        ("position", pa.int64()),
        ("loss", pa.float64()),
        ("helpful", pa.bool_()),  # null where the loop did not judge the row (experience utility)
    ]
)


@dataclass
class LossLog:
    """Losses of trained rows, accumulated as arrays (one append per batch, not per row)."""

    parts: list[pa.RecordBatch] = field(default_factory=list)

    def add(self, sources: Sequence[str], versions: Sequence[int | None], batch: dict[str, Any], losses: Any, helpful: Any = None) -> None:
        """Log one batch: `batch` is what the stream yielded, `losses` one value per row.

        `helpful` (optional, one bool per row): whether the row helped, e.g. the agent's task
        succeeded with that experience in context; `write_utility` counts it as a helpful use.
        """
        loss = _numpy(losses, np.float64)
        index = np.asarray(batch["_source"]).astype(np.int64)
        if loss.shape != index.shape:
            raise ValidationError("losses", f"need one loss per row: batch has {len(index)} rows, got {len(loss)} losses")
        if not np.isfinite(loss).all():
            raise ValidationError("losses", "must be finite")
        flags = None if helpful is None else _numpy(helpful, None)
        if flags is not None and (flags.dtype != np.bool_ or flags.shape != index.shape):
            raise ValidationError("helpful", f"must be one bool per row: batch has {len(index)} rows, got {len(flags)} of {flags.dtype}")
        names = pa.array(list(sources), pa.string())
        version = pa.array([-1 if v is None else v for v in versions], pa.int64())
        self.parts.append(
            pa.RecordBatch.from_arrays(
                [
                    names.take(index),
                    version.take(index),
                    pa.array(np.asarray(batch["_position"])),
                    pa.array(loss),
                    pa.nulls(len(index), pa.bool_()) if flags is None else pa.array(flags),
                ],
                schema=_LOG_SCHEMA,
            )
        )

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.parts, schema=_LOG_SCHEMA)

    def save(self, path: str | Path) -> Path:
        """Write the log as an Arrow IPC file (how Ray Train workers hand it to the driver)."""
        path = Path(path)
        with ipc.new_file(str(path), _LOG_SCHEMA) as writer:
            writer.write_table(self.table())
        return path

    @staticmethod
    def load(paths: Sequence[str | Path]) -> pa.Table:
        tables = [ipc.open_file(pa.memory_map(str(p))).read_all() for p in paths]
        return pa.concat_tables(tables) if tables else _LOG_SCHEMA.empty_table()


def _numpy(values: Any, dtype: Any) -> np.ndarray:
    """A flat array from a tensor (any device), an array or a list."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=dtype).reshape(-1)


def row_ids(source: Source, version: int | None, column: str | None = None) -> pa.Array:
    """`column` (default: the source's id_column) of the rows the stream saw at `version`, in row order."""
    column = column or source.id_column
    if column is None:
        raise ValidationError("id_column", f"source '{source.name}' needs an id_column to keep priorities")
    if isinstance(source, ArrowSource):  # the same rows the stream saw (filter included), all columns
        return replace(source, columns=None).rows().column(source.rename.get(column, column)).combine_chunks()
    assert isinstance(source, LanceBacked)
    return source.dataset(version).to_table(columns=[column], filter=source.filter).column(0).combine_chunks()


def ids_at(ids: pa.Array, positions: pa.ChunkedArray, source: str, version: int) -> pa.Array:
    """The ids of logged positions; positions outside the snapshot are refused by name."""
    if len(positions) and (pc.min(positions).as_py() < 0 or pc.max(positions).as_py() >= len(ids)):
        raise ValidationError("position", f"source '{source}' had {len(ids)} rows at version {version}; the log names rows outside them")
    return ids.take(positions)


def write_priorities(store: Store, sources: Sequence[Source], log: pa.Table, eps: float = 1e-6, table: str = PRIORITIES) -> int | None:
    """Upsert the latest logged loss of every (source, sample) as its priority, in one merge.

    Rows of sources without an `id_column` (e.g. new-task data) have nothing to key them by: skipped.
    """
    by_name = {s.name: s for s in sources}
    parts = []
    for group in log.group_by(["source", "version"]).aggregate([]).to_pylist():
        name, version = group["source"], group["version"]
        if name not in by_name:
            raise ValidationError("source", f"log names source '{name}' that is not one of {sorted(by_name)}")
        if by_name[name].id_column is None:
            continue
        rows = log.filter(pc.and_(pc.equal(log["source"], name), pc.equal(log["version"], version)))
        ids = row_ids(by_name[name], None if version < 0 else version)
        sample = ids_at(ids, rows["position"], name, version).cast(pa.string())
        parts.append(pa.table({"source": rows["source"], "sample_id": sample, "priority": pc.add(pc.abs(rows["loss"]), eps)}))
    if not parts:
        return None
    merged = pa.concat_tables(parts)
    # keep the last logged value per sample: later rows win
    merged = merged.append_column("_order", pa.array(np.arange(merged.num_rows)))
    last = merged.group_by(["source", "sample_id"]).aggregate([("_order", "max")]).column("_order_max")
    merged = merged.take(last).drop_columns(["_order"])
    if not store.exists(table):
        store.create_table(table, Kind.PRIORITIES)
    return store.merge(table, merged, on=["source", "sample_id"])


def load_priorities(store: Store, source: Source, version: int | None, table: str = PRIORITIES) -> np.ndarray | None:
    """Stored priorities of a source's rows at `version`, in row order (NaN where none is stored)."""
    if not isinstance(source, StoreSource) or source.store is not store or not store.exists(table) or source.id_column is None:
        return None
    stored = store.read(table, columns=["sample_id", "priority"], filter=f"source = '{source.name}'")
    if stored.num_rows == 0:
        return None
    ids = row_ids(source, version).cast(pa.string())
    rows = pa.table({"sample_id": ids, "_row": pa.array(np.arange(len(ids)))})
    joined = rows.join(stored, "sample_id", join_type="left outer")
    out = np.full(len(ids), np.nan)
    out[joined["_row"].to_numpy()] = joined["priority"].to_numpy(zero_copy_only=False)
    return out
