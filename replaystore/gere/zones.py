"""2-bit TM zone codes: all the TM margin loss needs from a frozen activation, at 1/16 of float32.

Each element of a frozen hidden state is classified against per-dimension thresholds
`neg = mean − k·std` and `pos = mean + k·std`; four codes share a byte. Rows (samples) are packed
byte-aligned so each sample stays one binary value in the store.
"""

from __future__ import annotations

import numpy as np
import torch

BETWEEN, LOW, HIGH = 0, 1, 2


def zone_codes(values: torch.Tensor, neg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Zone of each element (uint8): LOW if ≤ neg only, HIGH if ≥ pos only, else BETWEEN.

    Compared in the promoted dtype of values and thresholds (float32 thresholds against bfloat16
    or float16 states compare in float32, as GeRe's `states <= neg_thr` does). An element that is
    both ≤ neg and ≥ pos (a dimension with std 0, or k = 0) is BETWEEN: with neg = pos = t its
    penalty relu(h − t) + relu(t − h) equals GeRe's sum of the low and the high penalty.
    """
    dtype = torch.promote_types(values.dtype, neg.dtype)
    values = values.to(dtype)
    low = values <= neg.to(values.device, dtype)
    high = values >= pos.to(values.device, dtype)
    codes = torch.where(low & ~high, LOW, torch.where(high & ~low, HIGH, BETWEEN))
    return codes.to(torch.uint8)


def _row_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each row's codes in the 4-aligned layout, and each row's padded length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    padded = (lengths + 3) // 4 * 4
    shift = np.cumsum(padded) - padded - (np.cumsum(lengths) - lengths)
    positions = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(shift, lengths)
    return positions, padded


def pack_rows(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack concatenated per-row codes 4 per byte; returns the bytes and per-row byte offsets."""
    positions, padded = _row_layout(lengths)
    aligned = np.zeros(int(padded.sum()), dtype=np.uint8)
    aligned[positions] = np.asarray(codes, dtype=np.uint8).reshape(-1)
    quads = aligned.reshape(-1, 4)
    packed = quads[:, 0] | (quads[:, 1] << 2) | (quads[:, 2] << 4) | (quads[:, 3] << 6)
    offsets = np.concatenate([[0], np.cumsum(padded // 4)]).astype(np.int64)
    return packed.astype(np.uint8), offsets


def unpack_rows(packed: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inverse of `pack_rows`: the concatenated codes of every row, padding dropped."""
    packed = np.asarray(packed, dtype=np.uint8)
    codes = np.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], axis=1).reshape(-1)
    positions, _ = _row_layout(lengths)
    return codes[positions]
