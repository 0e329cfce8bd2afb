"""Load the table contracts in `schemas/` and hold every write to them.

The JSON files are the only definition of each table kind; this module turns them into Arrow
schemas and conforms user input (Arrow, dicts of columns, lists of rows, numpy arrays) to them,
raising a `ValidationError` that names the column and the rule before anything is written.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replaystore.errors import NotFoundError, ValidationError

# schemas/ installs as the data package `replaystore.contracts` (pyproject.toml), so a wheel without
# the checkout carries its contracts; $REPLAYSTORE_SCHEMAS points at another folder of them.
SCHEMA_DIR: Traversable = Path(os.environ["REPLAYSTORE_SCHEMAS"]) if os.environ.get("REPLAYSTORE_SCHEMAS") else files("replaystore.contracts")

KIND_KEY = b"replaystore.kind"
VERSION_KEY = b"replaystore.schema_version"
PARAMS_KEY = b"replaystore.params"

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
STORAGE_VERSIONS = ("2.0", "2.1", "2.2")
SCALAR_INDEX_TYPES = ("BTREE", "BITMAP")  # what a field's `"index"` may ask for  # Lance data file formats a schema file may pin
_LIST = re.compile(r"^list<(.+)>$")
_FIXED = re.compile(r"^fixed_size_list<(.+),\s*(\$?\w+)>$")


class Kind(enum.StrEnum):
    """The table kinds: one member per file in `schemas/`, named like it (tests/test_schemas.py checks).

    Write a kind name as `Kind.EXEMPLARS`, never as a string literal. Members are `str`s, so they pass
    wherever a kind is taken; a table named like its kind (the default) uses `Kind.X.value`.
    """

    ACTIVATION_STATES = "activation_states"
    ACTIVATION_STATS = "activation_stats"
    CURRICULUM_ORDERINGS = "curriculum_orderings"
    CURRICULUM_SCORES = "curriculum_scores"
    EXEMPLAR_BUFFERS = "exemplar_buffers"
    EXEMPLARS = "exemplars"
    EXPERIENCES = "experiences"
    GENERAL_SAMPLES = "general_samples"
    PRIORITIES = "priorities"
    TASK_SAMPLES = "task_samples"


@dataclass(frozen=True)
class FieldSpec:
    """One column of a table kind as written in its schema file."""

    name: str
    type: str
    nullable: bool = False
    default: Any = None
    checks: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    index: str | None = None  # scalar index the index flow keeps on this column: "BTREE" or "BITMAP"


@dataclass(frozen=True)
class TableSpec:
    """A table kind: its fields, version and the parameters (vector sizes) it takes."""

    kind: str
    schema_version: int
    description: str
    params: Mapping[str, Any]
    fields: tuple[FieldSpec, ...]
    data_storage_version: str | None = None  # None: pylance's default file format

    def field(self, name: str) -> FieldSpec:
        found = self.by_name.get(name)
        if found is None:
            raise ValidationError(name, f"unknown column for table kind '{self.kind}'")
        return found

    @cached_property
    def by_name(self) -> Mapping[str, FieldSpec]:
        """The fields keyed by column name (conform looks each column up on every write)."""
        return {f.name: f for f in self.fields}

    @property
    def scalar_indexes(self) -> dict[str, str]:
        """Column → scalar index type, for the fields whose `"index"` asks for one (file order)."""
        return {f.name: f.index for f in self.fields if f.index is not None}

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults from the file, overridden by what the caller gives; unknown names refused."""
        merged = dict(self.params)
        for key, value in (params or {}).items():
            if key not in self.params:
                raise ValidationError(key, f"not a parameter of table kind '{self.kind}' (has: {sorted(self.params)})")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValidationError(key, f"must be a positive integer, got {value!r}")
            merged[key] = value
        return merged

    def arrow_schema(self, params: Mapping[str, Any] | None = None) -> pa.Schema:
        """The Arrow schema of a table of this kind, with kind and version in its metadata."""
        resolved = self.resolve_params(params)
        fields = [pa.field(f.name, parse_type(f.type, resolved), nullable=f.nullable, metadata={"description": f.description}) for f in self.fields]
        metadata = {
            KIND_KEY: self.kind.encode(),
            VERSION_KEY: str(self.schema_version).encode(),
            PARAMS_KEY: json.dumps(resolved, sort_keys=True).encode(),
        }
        return pa.schema(fields, metadata=metadata)


def parse_type(text: str, params: Mapping[str, Any]) -> pa.DataType:
    """Turn a schema-file type string into an Arrow type."""
    text = text.strip()
    if text in _PRIMITIVES:
        return _PRIMITIVES[text]
    if m := _FIXED.match(text):
        size_text = m.group(2)
        size = params[size_text[1:]] if size_text.startswith("$") else int(size_text)
        return pa.list_(parse_type(m.group(1), params), int(size))
    if m := _LIST.match(text):
        return pa.list_(parse_type(m.group(1), params))
    raise ValueError(f"unknown schema type {text!r}")


def load_spec(kind: str) -> TableSpec:
    """Read `schemas/<kind>.json` (a `Kind` or its name; once per kind)."""
    return _load_spec(str(kind))  # lru_cache keys a `Kind` apart from its name


@cache
def _load_spec(kind: str) -> TableSpec:
    path = SCHEMA_DIR / f"{kind}.json"
    if not re.fullmatch(r"[a-z_]+", kind) or not path.is_file():
        raise NotFoundError(f"unknown table kind '{kind}' (known: {', '.join(known_kinds())})")
    return parse_spec(json.loads(path.read_text()))


def parse_spec(raw: Mapping[str, Any]) -> TableSpec:
    """A table kind from the parsed JSON of its schema file."""
    fields = tuple(
        FieldSpec(
            name=f["name"],
            type=f["type"],
            nullable=bool(f.get("nullable", False)),
            default=f.get("default"),
            checks=f.get("checks", {}),
            description=f.get("description", ""),
            index=_index_type(f),
        )
        for f in raw["fields"]
    )
    return TableSpec(raw["kind"], int(raw["schema_version"]), raw.get("description", ""), raw.get("params", {}), fields, _storage_version(raw))


def _index_type(raw_field: Mapping[str, Any]) -> str | None:
    """A field's optional `"index"`: the scalar index kept on it. Metadata only: the Arrow schema ignores it."""
    value = raw_field.get("index")
    if value is not None and value not in SCALAR_INDEX_TYPES:
        raise ValidationError(f"{raw_field.get('name')}.index", f"must be one of {list(SCALAR_INDEX_TYPES)}, got {value!r}")
    return value


def _storage_version(raw: Mapping[str, Any]) -> str | None:
    """The optional `"lance": {"data_storage_version": ...}` section: the file format new tables use.

    Appends, merges and compactions keep the format a table was created with.
    """
    section = raw.get("lance", {})
    if not isinstance(section, Mapping):
        raise ValidationError("lance", f"must be an object, got {type(section).__name__}")
    unknown = sorted(set(section) - {"data_storage_version"})
    if unknown:
        raise ValidationError(f"lance.{unknown[0]}", "unknown setting (known: data_storage_version)")
    version = section.get("data_storage_version")
    if version is not None and version not in STORAGE_VERSIONS:
        raise ValidationError("lance.data_storage_version", f"must be one of {list(STORAGE_VERSIONS)}, got {version!r}")
    return version


def known_kinds() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in SCHEMA_DIR.iterdir() if p.name.endswith(".json"))


def kind_of(schema: pa.Schema) -> str | None:
    """The table kind recorded in a table's schema metadata, if any."""
    meta = schema.metadata or {}
    value = meta.get(KIND_KEY)
    return value.decode() if value else None


def params_of(schema: pa.Schema) -> dict[str, Any]:
    meta = schema.metadata or {}
    value = meta.get(PARAMS_KEY)
    return json.loads(value) if value else {}


# --------------------------------------------------------------------------------------------
# Conforming input to a schema


def to_columns(data: Any) -> dict[str, Any]:
    """Accept Arrow tables/batches, dicts of columns, lists of row dicts, polars/pandas frames."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return dict(zip(data.column_names, data.columns))
    if hasattr(data, "to_arrow") and not isinstance(data, (dict, list)):
        return to_columns(data.to_arrow())
    if hasattr(data, "to_dict") and hasattr(data, "columns") and not isinstance(data, dict):
        return to_columns(pa.Table.from_pandas(data, preserve_index=False))
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, list):
        if not all(isinstance(row, Mapping) for row in data):
            raise ValidationError("rows", "each row must be a mapping of column name to value")
        names: dict[str, None] = {}
        for row in data:
            names.update(dict.fromkeys(row))
        return {name: [row.get(name) for row in data] for name in names}
    raise ValidationError("data", f"cannot read rows from {type(data).__name__}; pass Arrow, a dict of columns or a list of dicts")


def _column_length(value: Any) -> int:
    if isinstance(value, (pa.Array, pa.ChunkedArray, np.ndarray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value)
    raise ValidationError("data", f"column values must be sequences, got {type(value).__name__}")


def _to_arrow(name: str, value: Any, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Build an Arrow array for one column, converting 2-D numpy into (fixed-size) lists."""
    try:
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            return value
        if isinstance(value, np.ndarray) and value.ndim == 2 and (pa.types.is_fixed_size_list(target) or pa.types.is_list(target)):
            inner = target.value_type
            flat = pa.array(np.ascontiguousarray(value).reshape(-1).astype(inner.to_pandas_dtype(), copy=False))
            return pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
        if isinstance(value, np.ndarray) and value.ndim == 1:
            return pa.array(value)
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], np.ndarray):
            value = [v.tolist() for v in value]
        if pa.types.is_timestamp(target):
            return pa.array(value, type=target)
        if _holds_integers(target):
            inferred = pa.array(value)
            if any(pa.types.is_floating(t) for t in _nested_types(inferred.type)):
                return inferred  # `_cast` refuses it; `pa.array([1.5], pa.int64())` would silently give 1
        return pa.array(value, type=_inference_type(target))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(name, f"values cannot be read as {target}: {_short(exc)}") from None


def _holds_integers(target: pa.DataType) -> bool:
    """Integer columns and lists of integers (`pa.array([1.5], pa.int64())` would truncate to 1)."""
    if pa.types.is_list(target) or pa.types.is_large_list(target) or pa.types.is_fixed_size_list(target):
        target = target.value_type
    return pa.types.is_integer(target)


def _inference_type(target: pa.DataType) -> pa.DataType | None:
    """Let Arrow infer list lengths so a wrong vector size gets a precise error below."""
    if pa.types.is_fixed_size_list(target):
        return pa.list_(target.value_type)
    return target


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _cast(name: str, arr: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Allow lossless widening and list→fixed-size list of the right length; refuse the rest."""
    source = arr.type
    if source == target:
        return arr
    if pa.types.is_null(source):
        return pa.nulls(len(arr), type=target)
    if pa.types.is_fixed_size_list(target):
        if not (pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source)):
            raise ValidationError(name, f"expected a vector of {target.list_size} {target.value_type}, got {source}")
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        if pa.types.is_fixed_size_list(source):
            lengths = np.full(len(arr), source.list_size)
            valid = np.asarray(arr.is_valid())
        else:
            lengths = np.asarray(pc.list_value_length(arr).fill_null(target.list_size))
            valid = np.ones(len(arr), dtype=bool)
        bad = np.nonzero((lengths != target.list_size) & valid)[0]
        if len(bad):
            raise ValidationError(name, f"vector dimension must be {target.list_size}, got {int(lengths[bad[0]])} at row {int(bad[0])}")
        values = _cast(name, arr.flatten(), target.value_type)
        mask = pc.invert(arr.is_valid()) if arr.null_count else None
        return pa.FixedSizeListArray.from_arrays(values, target.list_size, mask=mask)
    if pa.types.is_list(target) and (pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source)):
        _check_castable(name, source.value_type, target.value_type)
        return arr.cast(target)
    _check_castable(name, source, target)
    try:
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValidationError(name, f"cannot convert {source} to {target}: {_short(exc)}") from None


def _check_castable(name: str, source: pa.DataType, target: pa.DataType) -> None:
    if source == target:
        return
    num = pa.types.is_integer
    flt = pa.types.is_floating
    ok = (
        (num(source) and num(target))
        or (num(source) and flt(target))
        or (flt(source) and flt(target))
        or (pa.types.is_large_string(source) and pa.types.is_string(target))
        or (pa.types.is_string(source) and pa.types.is_large_string(target))
        or (pa.types.is_large_binary(source) and pa.types.is_binary(target))
        or (pa.types.is_timestamp(source) and pa.types.is_timestamp(target))
        or pa.types.is_null(source)
    )
    if not ok:
        raise ValidationError(name, f"expected {target}, got {source}")


def _default_array(spec: FieldSpec, n: int, target: pa.DataType) -> pa.Array:
    value = datetime.now(UTC) if spec.default == "now" else spec.default
    return pa.repeat(pa.scalar(value, type=target), n)  # one value repeated, not a Python list of n


def _check_values(spec: FieldSpec, arr: pa.Array | pa.ChunkedArray, screen: _ByteScreen | None) -> None:
    """Apply the schema file's `checks` to one column (`screen`: its string bytes, when already screened)."""
    checks = spec.checks
    if not checks or len(arr) == 0:
        return
    name = spec.name
    values = arr
    if pa.types.is_floating(arr.type) and checks.get("finite"):
        finite = pc.is_finite(values)
        bad = pc.invert(finite.fill_null(True))
        if pc.any(bad).as_py():
            row = int(pc.index(bad, True).as_py())
            raise ValidationError(name, f"must be finite (no NaN or inf), got {arr[row].as_py()} at row {row}")
    if ("min" in checks or "max" in checks) and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        # The column's extremes first; the offending row is looked for only when one is out of range.
        low, high = _extremes(values)
        if "min" in checks and low is not None and low < checks["min"]:
            row = int(pc.index(pc.less(values, checks["min"]).fill_null(False), True).as_py())
            raise ValidationError(name, f"must be ≥ {checks['min']}, got {arr[row].as_py()} at row {row}")
        if "max" in checks and high is not None and high > checks["max"]:
            row = int(pc.index(pc.greater(values, checks["max"]).fill_null(False), True).as_py())
            raise ValidationError(name, f"must be ≤ {checks['max']}, got {arr[row].as_py()} at row {row}")
    if "in" in checks:
        allowed = pa.array(checks["in"], type=arr.type)
        bad = pc.invert(pc.is_in(values, value_set=allowed)).fill_null(False)
        if pc.any(bad).as_py():
            row = int(pc.index(bad, True).as_py())
            raise ValidationError(name, f"must be one of {list(checks['in'])}, got {arr[row].as_py()!r} at row {row}")
    if "min_length" in checks and not _long_enough_bytes(screen, checks["min_length"]):
        lengths = pc.utf8_length(values) if pa.types.is_string(arr.type) else pc.list_value_length(values)
        shortest = pc.min(lengths).as_py()
        if shortest is not None and shortest < checks["min_length"]:
            row = int(pc.index(pc.less(lengths, checks["min_length"]).fill_null(False), True).as_py())
            raise ValidationError(name, f"must have length ≥ {checks['min_length']} at row {row}")


def _extremes(arr: pa.Array | pa.ChunkedArray) -> tuple[Any, Any]:
    """A numeric column's smallest and largest value (None for a column without values). Integers
    without nulls go through numpy: two light calls, where Arrow's `min_max` dispatch costs several
    times more on the cold caches a commit leaves (floats stay with Arrow, which skips NaN)."""
    if pa.types.is_integer(arr.type) and arr.null_count == 0 and len(arr):
        values = arr.to_numpy()  # no copy for a single chunk
        return values.min().item(), values.max().item()
    low, high = (v.as_py() for v in pc.min_max(arr).values())
    return low, high


def _long_enough_bytes(screen: _ByteScreen | None, least: int) -> bool:
    """Whether every string has at least `least` characters, told from byte lengths alone (no UTF-8
    decoding): a character takes at most 4 bytes, so 4·least − 3 bytes always hold `least` of them.
    False means "count the characters", not "too short"."""
    return screen is not None and (screen.shortest is None or screen.shortest >= 4 * least - 3)


def conform(data: Any, schema: pa.Schema, kind: str | None = None) -> pa.Table:
    """Return `data` as an Arrow table with exactly `schema`, or raise `ValidationError`.

    Missing columns take their default (or null when nullable); unknown columns, wrong types,
    vectors of the wrong dimension, nulls in non-nullable columns and failed value checks are
    refused with the column named.
    """
    kind = kind or kind_of(schema)
    spec = load_spec(kind) if kind else None
    columns = to_columns(data)
    unknown = [name for name in columns if schema.get_field_index(name) < 0]
    if unknown:
        raise ValidationError(unknown[0], f"unknown column (table kind '{kind}' has: {', '.join(schema.names)})")
    lengths = {name: _column_length(value) for name, value in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValidationError("data", f"columns have different lengths: {lengths}")
    n = next(iter(lengths.values()), 0)
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for target_field in schema:
        name = target_field.name
        fspec = _spec_for(spec, name)
        if name not in columns:
            if fspec is not None and fspec.default is not None:
                arrays.append(_default_array(fspec, n, target_field.type))
                continue
            if not target_field.nullable:
                raise ValidationError(name, "missing required column (not nullable, no default)")
            arrays.append(pa.nulls(n, type=target_field.type))
            continue
        arrays.append(_conform_column(target_field, fspec, columns[name], fill_defaults=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def check_computed(values: pa.Table, schema: pa.Schema) -> None:
    """Hold values computed by SQL expressions (an update's preview) to the same rules as written data."""
    kind = kind_of(schema)
    spec = load_spec(kind) if kind else None
    for name in values.column_names:
        _conform_column(schema.field(name), _spec_for(spec, name), values.column(name), fill_defaults=False)


def _conform_column(target_field: pa.Field, fspec: FieldSpec | None, value: Any, *, fill_defaults: bool) -> pa.Array | pa.ChunkedArray:
    name = target_field.name
    arr = _cast(name, _to_arrow(name, value, target_field.type), target_field.type)
    screen = _screen_bytes(arr)
    _check_utf8(name, arr, screen)
    if fill_defaults and arr.null_count and fspec is not None and fspec.default is not None:
        arr = pc.if_else(arr.is_null(), _default_array(fspec, len(arr), target_field.type), arr)
        screen = _screen_bytes(arr)  # the defaults are values now
    if not target_field.nullable and arr.null_count:
        first = int(pc.index(arr.is_null(), True).as_py())
        raise ValidationError(name, f"is not nullable: {arr.null_count} null value(s), first at row {first}")
    if fspec is not None:
        _check_values(fspec, arr, screen)
    return arr


def _check_utf8(name: str, arr: pa.Array | pa.ChunkedArray, screen: _ByteScreen | None) -> None:
    """Arrow string arrays built from raw buffers skip UTF-8 checks; Lance would store them and fail every read."""
    if not _holds_strings(arr.type) or (screen is not None and screen.ascii):
        return
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise ValidationError(name, f"text must be valid UTF-8: {_short(exc)}") from None


@dataclass(frozen=True)
class _ByteScreen:
    """What a string column's raw buffers tell without decoding it, in one numpy pass over its
    offsets and one over its bytes (a commit's checks run once per column, not once per row)."""

    ascii: bool  # every byte < 0x80, so the text is valid UTF-8; False means "validate in full", not "invalid"
    shortest: int | None  # the fewest bytes of any non-null value (None: no values)


def _screen_bytes(arr: pa.Array | pa.ChunkedArray) -> _ByteScreen | None:
    """None unless `arr` is a `string` column with well-formed offsets (then the full checks run)."""
    if not pa.types.is_string(arr.type):
        return None
    ascii_only, shortest = True, None
    for chunk in arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]:
        try:
            chunk.validate()  # buffer sizes and the offsets' range, in constant time
        except pa.ArrowInvalid:
            return None
        _, offsets_buffer, data_buffer = chunk.buffers()
        if offsets_buffer is None or chunk.null_count == len(chunk):  # no values: nothing to read
            continue
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=len(chunk) + 1, offset=4 * chunk.offset)
        least = int(np.diff(offsets).min())
        if least < 0:  # offsets that go backwards: only a full validation can say what is wrong
            return None
        if chunk.null_count:  # a null's slot may hold any length: measure the values only
            least = pc.min(pc.binary_length(chunk)).as_py()
        if least is not None:
            shortest = least if shortest is None else min(shortest, least)
        if ascii_only and data_buffer is not None and offsets[-1] > offsets[0]:
            ascii_only = int(np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]].max()) < 0x80
    return _ByteScreen(ascii_only, shortest)


@cache
def _holds_strings(dtype: pa.DataType) -> bool:
    return any(pa.types.is_string(t) or pa.types.is_large_string(t) for t in _nested_types(dtype))


def _nested_types(dtype: pa.DataType) -> list[pa.DataType]:
    return [dtype, *_nested_types(dtype.value_type)] if hasattr(dtype, "value_type") else [dtype]


def _spec_for(spec: TableSpec | None, name: str) -> FieldSpec | None:
    return None if spec is None else spec.by_name.get(name)
