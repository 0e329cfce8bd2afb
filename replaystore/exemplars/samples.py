"""Samples in and out of Arrow without per-row Python: raw arrays become one binary buffer, and back.

A raw sample is stored as its row-major bytes with its shape and numpy dtype; token samples as
an int32 list. Reading rebuilds `(N, *shape)` arrays straight from the Arrow buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from replaystore.errors import ValidationError

TOKENS = "tokens"  # the buffer's sample_dtype when its samples are token ids
TOKEN_BYTES = 4  # tokens are stored (and accounted) as int32


@dataclass(frozen=True)
class Encoded:
    """Columns for a batch of samples, and the bytes each row is accounted for."""

    columns: dict[str, pa.Array]
    nbytes: np.ndarray
    shape: tuple[int, ...] | None
    dtype: str


def as_numpy(values: Any, field: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValidationError(field, f"must be an array of equally shaped samples: {exc}") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValidationError(field, f"must hold numbers (bool, int, uint or float), got dtype {arr.dtype}")
    return arr


def encode_raw(samples: Any) -> Encoded:
    """`(N, *shape)` array or tensor → binary `data`, `shape` and `dtype` columns."""
    arr = np.ascontiguousarray(as_numpy(samples, "samples"))
    if arr.ndim < 1 or len(arr) == 0:
        raise ValidationError("samples", f"need an array of shape (N, *sample_shape) with N ≥ 1, got shape {arr.shape}")
    n, shape = len(arr), tuple(int(d) for d in arr.shape[1:])
    per = arr[0].nbytes
    if arr.nbytes >= 2**31:  # Arrow `binary` offsets are int32
        raise ValidationError("samples", f"one add holds at most 2 GiB of samples, got {arr.nbytes:,} B; add in batches")
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int64) * per).astype(np.int32))
    data = pa.BinaryArray.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(arr.reshape(-1).view(np.uint8))])
    dims = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * len(shape)), pa.array(np.tile(np.array(shape, dtype=np.int32), n)))
    dtype = arr.dtype.name
    return Encoded({"data": data, "shape": dims, "dtype": pa.repeat(pa.scalar(dtype), n)}, np.full(n, per, dtype=np.int64), shape, dtype)


def encode_tokens(tokens: Sequence[Sequence[int]] | np.ndarray) -> Encoded:
    """Token id sequences (lists, or a 2-D int array) → an int32 `tokens` column; 4 bytes per token."""
    if isinstance(tokens, (np.ndarray, torch.Tensor)):
        arr = as_numpy(tokens, "tokens")
        if arr.ndim != 2 or arr.dtype.kind not in "iu":
            raise ValidationError("tokens", f"a token array must be 2-D integers, got shape {arr.shape} dtype {arr.dtype}")
        column = pa.ListArray.from_arrays(pa.array(np.arange(len(arr) + 1, dtype=np.int32) * arr.shape[1]), pa.array(arr.reshape(-1).astype(np.int32)))
    else:
        try:
            column = pa.array(list(tokens), type=pa.list_(pa.int32()))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValidationError("tokens", f"must be sequences of int32 token ids: {str(exc).splitlines()[0]}") from None
    if len(column) == 0 or column.null_count:
        raise ValidationError("tokens", "need N ≥ 1 token sequences and no nulls")
    lengths = np.diff(np.asarray(column.offsets))
    return Encoded({"tokens": column}, lengths.astype(np.int64) * TOKEN_BYTES, None, TOKENS)


def decode_raw(data: pa.ChunkedArray | pa.Array, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Rebuild `(N, *shape)` from a binary column whose rows all hold one sample of `shape`/`dtype`."""
    arr = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    n = len(arr)
    per = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if n == 0:
        return np.empty((0, *shape), dtype=dtype)
    if arr.null_count:
        raise ValidationError("data", f"{arr.null_count} row(s) have no raw sample")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    if not (np.diff(offsets) == per).all():
        raise ValidationError("data", f"every row must hold {per} bytes for shape {tuple(shape)} {dtype}")
    raw = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return raw.view(dtype).reshape(n, *shape).copy()


def decode_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """`(N, D)` float32 from a list<float32> column whose rows all hold D values (feature vectors)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.asarray(arr.offsets)
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return np.asarray(values, dtype=np.float32).reshape(len(arr), -1)


def decode_tokens(tokens: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    arr = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    offsets = np.asarray(arr.offsets)
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.int32)
    return np.split(values[offsets[0] : offsets[-1]], offsets[1:-1] - offsets[0])
