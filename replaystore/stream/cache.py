"""A memory-mapped hot tier for fast random replay batches, tied to one table version.

Random access into Lance costs milliseconds per batch (`take` decodes whole pages); a replay
buffer needs it in microseconds. The hot tier writes a version's projected, filtered rows once into
uncompressed files — one `.npy` per fixed-width column (numbers, fixed-size vectors), one Arrow IPC
file for the rest — and memory-maps them. A random batch is then a numpy gather from the page cache,
the same thing TorchRL's `LazyMemmapStorage` does, while the store stays the owner of the data: the
directory is named by the table version, so a new version gets a new cache and an epoch pinned to a
version always reads exactly that version. Cost: disk = raw bytes of the projected columns (no
compression); RAM = whatever the OS keeps in page cache, shared by every process on the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from replaystore.stream.snapshots import arrays_of, contiguous, gather

if TYPE_CHECKING:
    from replaystore.stream.sources import LanceBacked

_DONE = "DONE"
SCAN_BATCH_ROWS = 65_536  # rows per Arrow batch while a version is copied into the hot tier
_REST = "rest.arrow"


def _fixed_width(kind: pa.DataType) -> tuple[np.dtype, tuple[int, ...]] | None:
    """numpy dtype and row shape of a column that fits a memmap, else None."""
    dims: list[int] = []
    while pa.types.is_fixed_size_list(kind):
        dims.append(kind.list_size)
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.dtype(kind.to_pandas_dtype()), tuple(dims)
    return None


def _column_array(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """Rows gathered from a memmap → an Arrow array of the column's type (no copy of the values)."""
    if pa.types.is_fixed_size_list(kind):
        inner = _column_array(values.reshape(-1, *values.shape[2:]), kind.value_type)
        return pa.FixedSizeListArray.from_arrays(inner, kind.list_size)
    return pa.array(values.reshape(-1), type=kind)


@dataclass
class MemmapSnapshot:
    """A built hot-tier directory, opened read-only."""

    directory: Path
    schema: pa.Schema
    arrays: dict[str, np.ndarray] = field(init=False)
    rest: pa.Table | None = field(init=False)
    num_rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.arrays = {f.name: np.load(self.directory / f"{i}.npy", mmap_mode="r") for i, f in enumerate(self.schema) if _fixed_width(f.type) is not None}
        rest = self.directory / _REST
        self.rest = ipc.open_file(pa.memory_map(str(rest))).read_all() if rest.exists() else None
        self.num_rows = int(json.loads((self.directory / _DONE).read_text())["rows"])

    def read(self, positions: np.ndarray) -> pa.Table:
        span = slice(int(positions[0]), int(positions[0]) + len(positions)) if contiguous(positions) else positions
        rest = None
        if self.rest is not None:
            rest = self.rest.slice(span.start, len(positions)) if isinstance(span, slice) else self.rest.take(pa.array(positions))
        columns = [
            _column_array(np.ascontiguousarray(self.arrays[f.name][span]), f.type) if f.name in self.arrays else rest.column(f.name)  # type: ignore[union-attr]
            for f in self.schema
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def read_arrays(self, positions: np.ndarray) -> list[dict[str, Any]]:
        if self.rest is None:  # every column is in a memmap: no Arrow table to build and convert back
            return [gather(self.arrays, positions)]
        return arrays_of(self.read(positions))

    def gather(self, name: str, positions: np.ndarray) -> np.ndarray:
        """One fixed-width column's rows, straight from the memmap (the fastest replay path)."""
        return self.arrays[name][positions]

    def __getstate__(self) -> dict[str, object]:  # reopen the maps in the receiving process
        return {"directory": self.directory, "schema": self.schema}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__post_init__()


@dataclass
class HotCache:
    """Builds (once) and opens the hot tier of `source` at `version`."""

    source: LanceBacked
    version: int | None
    root: Path | None = None

    def base(self) -> Path:
        """One folder per source configuration; one subfolder per table version."""
        src = self.source
        if self.root is not None:
            root = self.root
        elif (store := getattr(src, "store", None)) is not None and store.is_local:
            root = Path(store.uri) / "_cache"
        else:
            root = Path.home() / ".cache" / "replaystore" / "hot"
        key = json.dumps([src.location, list(src.columns or []), src.filter, dict(src.rename)], sort_keys=True)
        return root / f"{src.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def directory(self) -> Path:
        return self.base() / f"v{self.version}"

    def open(self) -> MemmapSnapshot:
        directory = self.directory()
        if not (directory / _DONE).exists():
            self.build(directory)
        schema = ipc.open_file(pa.memory_map(str(directory / "schema.arrow"))).schema
        return MemmapSnapshot(directory, schema)

    def build(self, directory: Path) -> None:
        """Scan the version once into a temporary folder, then rename it into place (atomic)."""
        src = self.source
        ds = src.dataset(self.version)
        n = ds.count_rows(filter=src.filter)
        scan = ds.scanner(columns=list(src.columns) if src.columns else None, filter=src.filter, batch_size=SCAN_BATCH_ROWS)
        schema = pa.schema([pa.field(src.rename.get(f.name, f.name), f.type) for f in scan.projected_schema])
        tmp = directory.parent / f".{directory.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        maps = {
            i: np.lib.format.open_memmap(tmp / f"{i}.npy", mode="w+", dtype=spec[0], shape=(n, *spec[1]))
            for i, f in enumerate(schema)
            if (spec := _fixed_width(f.type)) is not None
        }
        others = [i for i in range(len(schema)) if i not in maps]
        rest_schema = pa.schema([schema.field(i) for i in others])
        with ipc.new_file(str(tmp / "schema.arrow"), schema) as writer:
            pass
        writer = ipc.new_file(str(tmp / _REST), rest_schema) if others else None
        row = 0
        for batch in scan.to_batches():
            for i, target in maps.items():
                spec = _fixed_width(schema.field(i).type)
                column = batch.column(i)
                while pa.types.is_fixed_size_list(column.type):
                    column = column.flatten()
                target[row : row + len(batch)] = column.to_numpy(zero_copy_only=False).reshape(len(batch), *spec[1])  # type: ignore[index]
            if writer is not None:
                writer.write_batch(pa.RecordBatch.from_arrays([batch.column(i) for i in others], schema=rest_schema))
            row += len(batch)
        if writer is not None:
            writer.close()
        for target in maps.values():
            target.flush()
        (tmp / _DONE).write_text(json.dumps({"rows": row, "version": self.version}))
        try:
            os.rename(tmp, directory)
        except OSError:  # another process built it first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)

    def prune(self, keep: set[int]) -> list[Path]:
        """Remove cached versions not in `keep` (e.g. the pinned ones); returns what was removed."""
        removed = []
        for path in self.base().glob("v*"):
            if path.name[1:] not in {str(v) for v in keep}:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed
