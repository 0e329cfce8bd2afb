"""How one stored value shows in a page: images as PNG thumbnails, texts cut short, vectors summarised.

Thumbnails are PNGs written here with zlib (grayscale or RGB, scaled to the full 0-255 range) and
inlined as data URIs, so a page is one response and needs no image library.
"""

from __future__ import annotations

import base64
import struct
import zlib
from datetime import datetime
from html import escape
from typing import Any

import numpy as np
import pyarrow as pa
from markupsafe import Markup

TEXT_CHARS = 240
IMAGE_DTYPES = {"uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64"}


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of a (H, W) grayscale or (H, W, 3) RGB array, min-max scaled."""
    values = np.asarray(pixels, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi == lo else (values - lo) / (hi - lo) * 255.0
    image = np.ascontiguousarray(scaled.round().astype(np.uint8))
    height, width = image.shape[:2]
    color = 2 if image.ndim == 3 else 0
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def as_image(data: bytes | None, shape: list[int] | None, dtype: str | None) -> np.ndarray | None:
    """The raw sample as an image array, when its shape reads as one (H×W, H×W×3, or C×H×W with C 1 or 3)."""
    if data is None or not shape or dtype not in IMAGE_DTYPES:
        return None
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    if array.size != int(np.prod(shape)):
        return None
    array = array.reshape(shape)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        return array
    return None


def thumbnail(image: np.ndarray, title: str, size: int = 48) -> Markup:
    uri = "data:image/png;base64," + base64.b64encode(png(image)).decode()
    return Markup(f'<img class="thumb" src="{uri}" width="{size}" height="{size}" alt="{escape(title)}" title="{escape(title)}">')


def vector(values: list[float] | np.ndarray) -> Markup:
    """A vector as its length, norm and first values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Markup('<span class="vec">[]</span>')
    head = ", ".join(f"{x:.3g}" for x in v[:3])
    return Markup(f'<span class="vec">{v.size}-d ‖v‖={np.linalg.norm(v):.3g} [{head}{", …" if v.size > 3 else ""}]</span>')


def text(value: str, chars: int = TEXT_CHARS) -> Markup:
    """A text cut to `chars`; the full text (up to 2,000 characters) shows on hover."""
    short = value if len(value) <= chars else value[:chars] + "…"
    return Markup(f'<span class="text" title="{escape(value[:2000])}">{escape(short)}</span>')


def cell(value: Any, dtype: pa.DataType) -> Markup:
    """Any stored value, shown by its Arrow type."""
    if value is None:
        return Markup('<span class="null">null</span>')
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return Markup(f'<span class="bin">{len(value):,} bytes</span>')
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype) or pa.types.is_large_list(dtype):
        inner = dtype.value_type
        if pa.types.is_floating(inner):
            return vector(value)
        if len(value) > 8:
            return Markup(f'<span class="vec">{len(value)} values [{escape(", ".join(map(str, value[:6])))}, …]</span>')
        return Markup(f'<span class="vec">[{escape(", ".join(map(str, value)))}]</span>')
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return text(value)
    if isinstance(value, datetime):
        return Markup(f'<span class="time">{value:%Y-%m-%d %H:%M:%S}</span>')
    if isinstance(value, float):
        return Markup(f"{value:.6g}")
    return Markup(escape(str(value)))


def rows(table: pa.Table) -> list[list[Markup]]:
    """Every cell of `table` shown by type; a raw sample (data, shape, dtype) becomes a thumbnail in `data`."""
    columns = table.to_pydict()
    out = []
    for i in range(table.num_rows):
        row = []
        for field in table.schema:
            value = columns[field.name][i]
            if field.name == "data" and "shape" in columns and "dtype" in columns:
                image = as_image(value, columns["shape"][i], columns["dtype"][i])
                if image is not None:
                    row.append(thumbnail(image, f"{columns['shape'][i]} {columns['dtype'][i]}"))
                    continue
            row.append(cell(value, field.type))
        out.append(row)
    return out
