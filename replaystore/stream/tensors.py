"""Arrow batches → dicts of torch tensors, without a Python loop over rows.

Numeric columns are viewed, not copied. Fixed-size lists become 2-D (nested ones N-D) tensors over
the same buffer. Variable-length lists (token ids) become a padded 2-D tensor plus `<name>_lengths`,
built with one vectorised scatter. Binary columns become uint8 tensors — reshaped to the rows'
common `shape`/`dtype` when the table carries those columns (raw images in exemplar buffers),
padded + lengths otherwise. Once they have laid out the binary columns, `shape` and `dtype` leave
the batch, so every value of an exemplar batch is a tensor (`{k: v.to(dev) for k, v in batch.items()}`
works). Strings stay Python lists (there is no string tensor).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from replaystore.errors import ValidationError
from replaystore.stream.buffers import OUTPUT

# Arrow buffers are immutable, so numpy views of them are read-only; torch warns on every view.
# The tensors handed out are fresh per batch and nothing else reads those buffers.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


LAYOUT_COLUMNS = ("shape", "shape_lengths", "dtype")  # what a batch drops once they have shaped its binary columns


def _numeric(name: str, arr: pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type) or pa.types.is_duration(arr.type):
        arr = arr.cast(pa.int64())
    if arr.null_count:
        if not pa.types.is_floating(arr.type):
            raise ValidationError(name, f"has {arr.null_count} null value(s); filter them out or fill them before streaming")
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(arr.type):
        return arr.to_numpy(zero_copy_only=False)
    return arr.to_numpy(zero_copy_only=True)


def _fixed(name: str, arr: pa.FixedSizeListArray) -> np.ndarray:
    dims = []
    rows = len(arr)
    while pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        dims.append(size)
        arr = arr.values.slice(arr.offset * size, len(arr) * size)  # zero-copy; flatten() runs a kernel
    return _numeric(name, arr).reshape(rows, *dims)


def _offsets(arr: pa.Array) -> np.ndarray:
    width = np.int64 if pa.types.is_large_list(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)
    return offsets[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def pad(values: np.ndarray, offsets: np.ndarray, pad_value: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length rows (flat values + offsets) → padded [rows, max_len] array and lengths."""
    lengths = np.diff(offsets)
    n, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    out = np.full((n, width), pad_value, dtype=values.dtype)
    if width:
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(offsets[:-1] - offsets[0], lengths)
        out[rows, cols] = values[offsets[0] : offsets[-1]]
    return out, lengths


def _uniform_shape(table: pa.Table | pa.RecordBatch, names: list[str]) -> tuple[tuple[int, ...], np.dtype] | None:
    """The one (shape, dtype) all rows share, from the `shape`/`dtype` columns; None if they differ."""
    if len(table) == 0 or "shape" not in names or "dtype" not in names:
        return None
    dtypes, shapes = table.column("dtype"), table.column("shape")
    if dtypes.null_count or shapes.null_count or len(pc.unique(dtypes)) != 1:
        return None
    shapes = shapes.combine_chunks() if isinstance(shapes, pa.ChunkedArray) else shapes
    offsets = _offsets(shapes)
    ndim = np.diff(offsets)
    if (ndim != ndim[0]).any():
        return None
    dims = _numeric("shape", shapes.flatten()).reshape(len(shapes), int(ndim[0]))
    if (dims != dims[0]).any():
        return None
    return tuple(int(d) for d in dims[0]), np.dtype(dtypes[0].as_py())


def _binary(name: str, arr: pa.Array, common: tuple[tuple[int, ...], np.dtype] | None) -> dict[str, Any]:
    offsets = _offsets(arr)
    data = arr.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    if common is not None and not arr.null_count:
        shape, dtype = common
        if (np.diff(offsets) == int(np.prod(shape)) * dtype.itemsize).all():
            return {name: values[offsets[0] : offsets[-1]].view(dtype).reshape(len(arr), *shape)}
    padded, lengths = pad(values, offsets)
    return {name: padded, f"{name}_lengths": lengths}


def to_arrays(table: pa.Table | pa.RecordBatch) -> dict[str, Any]:
    """Every column of an Arrow batch as a numpy array (a view where the rules allow; strings as lists).
    A multi-chunk table column is combined (one copy); stream record batches one by one to avoid it."""
    names = table.column_names
    common = _uniform_shape(table, names)
    out: dict[str, Any] = {}
    for name, column in zip(names, table.columns):
        if isinstance(column, pa.ChunkedArray):  # combine_chunks copies even a single chunk
            arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        else:
            arr = column
        kind = arr.type
        if pa.types.is_fixed_size_list(kind):
            out[name] = _fixed(name, arr)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            out[name], out[f"{name}_lengths"] = pad(_numeric(name, arr.values), _offsets(arr))
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            out.update(_binary(name, arr, common))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            out[name] = arr.to_pylist()
        else:
            out[name] = _numeric(name, arr)
    binary = [n for n, t in zip(names, table.schema.types) if pa.types.is_binary(t) or pa.types.is_large_binary(t)]
    if common is not None and binary and not any(f"{n}_lengths" in out for n in binary):
        for layout in LAYOUT_COLUMNS:  # spent: the binary columns now have that shape and dtype
            out.pop(layout, None)
    return out


def as_tensors(arrays: dict[str, Any], pin_memory: bool = False) -> dict[str, Any]:
    """numpy arrays → torch tensors over the same memory (pinned: copied into page-locked memory,
    except tensors that already are)."""
    out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
    if pin_memory:
        out = {k: v.pin_memory() if isinstance(v, torch.Tensor) and not v.is_pinned() else v for k, v in out.items()}
    return out


def to_tensors(table: pa.Table | pa.RecordBatch, pin_memory: bool = False) -> dict[str, Any]:
    """Convert every column of an Arrow batch; see the module docstring for the rules."""
    return as_tensors(to_arrays(table), pin_memory)


def concat(parts: list[dict[str, Any]], pin_memory: bool = False) -> dict[str, Any]:
    """One batch of arrays from several (per-source pieces): one copy per column, padded lists widened,
    string lists joined (see `join`)."""
    keys = same_columns(parts)
    out: dict[str, Any] = {}
    for key in keys:
        arrays = [part[key] for part in parts]
        if f"{key}_lengths" in parts[0]:  # padded variable-length rows: widen to the widest part
            width = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) if a.shape[1] < width else a for a in arrays]
        out[key] = join(arrays, pin_memory)
    return out


def same_columns(parts: list[dict[str, Any]]) -> list[str]:
    """The columns every part has, refused unless all parts have the same ones."""
    keys = list(parts[0])
    for part in parts[1:]:
        if part.keys() != parts[0].keys():
            raise ValidationError("columns", f"sources of one stream must yield the same columns: {keys} vs {list(part)}")
    return keys


def join(arrays: list[Any], pin_memory: bool = False) -> Any:
    """Arrays of equal trailing shape one after another, copied once into recycled memory
    (`buffers.OUTPUT`), or with `pin_memory` into page-locked memory (no second copy); lists joined."""
    if not isinstance(arrays[0], np.ndarray):
        return [item for value in arrays for item in value]
    # numpy, not torch.cat: one single-threaded memcpy; torch's intra-op pool stalls on a busy CPU
    shape = (sum(len(a) for a in arrays), *arrays[0].shape[1:])
    dtype = np.result_type(*arrays)
    if pin_memory:  # torch's caching host allocator recycles pinned blocks
        out = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
        np.concatenate(arrays, out=out.numpy())
        return out
    return np.concatenate(arrays, out=OUTPUT.empty(shape, dtype))


def spans(lengths: list[int], sizes: list[int]) -> list[list[tuple[int, int, int]]]:
    """Consecutive runs of `sizes` rows out of pieces of `lengths` rows, as (piece, start, stop) per run:
    a run that spans two pieces has two."""
    out: list[list[tuple[int, int, int]]] = []
    j, at = 0, 0
    for size in sizes:
        run: list[tuple[int, int, int]] = []
        while size > 0:
            while at >= lengths[j]:
                j, at = j + 1, 0
            take = min(size, lengths[j] - at)
            run.append((j, at, at + take))
            at, size = at + take, size - take
        out.append(run)
    return out


def rows_of(piece: dict[str, Any]) -> int:
    return len(next(iter(piece.values()))) if piece else 0


def cut(pieces: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    """Consecutive runs of `sizes` rows out of a sequence of column dicts (record batches), as views:
    a run that spans two pieces comes back as two views."""
    return [[{k: v[a:b] for k, v in pieces[j].items()} for j, a, b in run] for run in spans([rows_of(p) for p in pieces], sizes)]
