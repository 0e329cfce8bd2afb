"""Encode activation states to bytes and back, many samples at a time, without per-row Python.

A batch's unpadded tokens arrive as one `[tokens, hidden]` tensor plus per-sample token counts;
they leave as one Arrow binary array (one value per sample) built from a single buffer, and
decoding reads the array's data buffer in one piece.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from replaystore.errors import ValidationError
from replaystore.gere import zones

PRECISIONS = ("float32", "float16", "bfloat16", "zones")
_FLOAT_VIEW = {"float32": (torch.float32, np.float32), "float16": (torch.float16, np.float16), "bfloat16": (torch.bfloat16, np.int16)}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValidationError("precision", f"must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def binary_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """One binary value per row from a byte buffer and row offsets (no copies per row)."""
    if offsets[-1] >= 2**31:
        return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data)])
    return pa.BinaryArray.from_buffers(pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def binary_payload(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The concatenated bytes of every value of a binary array, in row order."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    width = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]


def encode_rows(
    values: torch.Tensor,
    token_counts: np.ndarray,
    precision: str,
    neg: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
) -> pa.Array:
    """Encode `[tokens, hidden]` states (samples concatenated) as one binary value per sample."""
    check_precision(precision)
    counts = np.asarray(token_counts, dtype=np.int64)
    hidden = values.shape[-1]
    if precision == "zones":
        if neg is None or pos is None:
            raise ValidationError("thresholds", "zone codes need the neg and pos thresholds")
        codes = zones.zone_codes(values, neg, pos).cpu().numpy().reshape(-1)
        packed, offsets = zones.pack_rows(codes, counts * hidden)
        return binary_array(packed, offsets)
    torch_dtype, np_dtype = _FLOAT_VIEW[precision]
    flat = values.detach().to("cpu", torch_dtype).contiguous()
    if precision == "bfloat16":
        flat = flat.view(torch.int16)
    data = flat.numpy().astype(np_dtype, copy=False).reshape(-1).view(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(counts * hidden * np.dtype(np_dtype).itemsize)])
    return binary_array(data, offsets)


def decode_rows(states: pa.Array | pa.ChunkedArray, token_counts: np.ndarray, hidden_dim: int, precision: str) -> torch.Tensor:
    """Decode binary states back to `[tokens, hidden]`: float32 values, or uint8 codes for zones."""
    check_precision(precision)
    payload = binary_payload(states)
    counts = np.asarray(token_counts, dtype=np.int64)
    if precision == "zones":
        codes = zones.unpack_rows(payload, counts * hidden_dim)
        return torch.from_numpy(codes).view(-1, hidden_dim)
    np_dtype = _FLOAT_VIEW[precision][1]
    expected = int(counts.sum()) * hidden_dim * np.dtype(np_dtype).itemsize
    if payload.size != expected:
        raise ValidationError("states", f"{payload.size} bytes do not hold {int(counts.sum())}×{hidden_dim} {precision} values")
    flat = torch.from_numpy(payload.view(np_dtype).copy())
    if precision == "bfloat16":
        flat = flat.view(torch.bfloat16)
    return flat.to(torch.float32).view(-1, hidden_dim)


def pad_rows(flat: torch.Tensor, token_counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter concatenated per-sample rows into a right-padded `[batch, max_tokens, ...]` tensor."""
    counts = torch.as_tensor(np.asarray(token_counts, dtype=np.int64))
    longest = int(counts.max()) if len(counts) else 0
    mask = torch.arange(longest)[None, :] < counts[:, None]
    out = flat.new_zeros((len(counts), longest, *flat.shape[1:]))
    out[mask] = flat
    return out, mask
