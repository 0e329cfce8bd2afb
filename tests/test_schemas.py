"""Schema files load, build Arrow schemas, and every write rule refuses bad input by name."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replaystore
from replaystore import schemas
from replaystore.errors import ValidationError


def exemplar_rows(n: int = 3) -> dict:
    return {
        "buffer": ["b"] * n,
        "sample_id": list(range(n)),
        "class_id": [0] * n,
        "task_id": [0] * n,
        "rank": list(range(1, n + 1)),
        "nbytes": [64] * n,
    }


def experience_rows(dim: int = 384) -> dict:
    return {
        "experience_id": ["e1"],
        "workspace": ["w"],
        "kind": ["success"],
        "when_to_use": ["when x"],
        "content": ["do y"],
        "embedding": np.ones((1, dim), dtype=np.float32),
    }


def test_every_schema_file_builds_an_arrow_schema() -> None:
    kinds = schemas.known_kinds()
    assert {"general_samples", "activation_stats", "exemplars", "experiences", "curriculum_scores", "curriculum_orderings"} <= set(kinds)
    for kind in kinds:
        spec = schemas.load_spec(kind)
        arrow = spec.arrow_schema()
        assert schemas.kind_of(arrow) == kind
        assert all(f.metadata and f.metadata[b"description"] for f in arrow), kind
        raw = json.loads((schemas.SCHEMA_DIR / f"{kind}.json").read_text())
        assert [f["name"] for f in raw["fields"]] == arrow.names


def test_the_kind_registry_and_the_schema_files_agree() -> None:
    assert sorted(k.value for k in schemas.Kind) == schemas.known_kinds()
    for kind in schemas.Kind:
        assert kind.name == kind.value.upper()
        assert json.loads((schemas.SCHEMA_DIR / f"{kind.value}.json").read_text())["kind"] == kind.value
        assert schemas.load_spec(kind) is schemas.load_spec(kind.value)  # a member and its name are one cache key
        assert f"{kind}" == str(kind) == kind.value  # table names and paths built from a member read as the name


def test_vector_dimension_comes_from_params() -> None:
    arrow = schemas.load_spec("experiences").arrow_schema({"embedding_dim": 8})
    assert arrow.field("embedding").type == pa.list_(pa.float32(), 8)
    with pytest.raises(ValidationError, match="not a parameter"):
        schemas.load_spec("experiences").arrow_schema({"dim": 8})


def test_defaults_and_nulls_filled() -> None:
    table = schemas.conform(exemplar_rows(), schemas.load_spec("exemplars").arrow_schema())
    assert table.column("features").null_count == 3
    assert table.column("added_at").null_count == 0
    exp = schemas.conform(experience_rows(), schemas.load_spec("experiences").arrow_schema())
    assert exp.column("freq").to_pylist() == [0]
    assert exp.column("status").to_pylist() == ["active"]


BAD_WRITES = [
    ("missing required column", "exemplars", lambda r: r.pop("class_id"), "class_id: missing required column"),
    ("wrong type", "exemplars", lambda r: r.update(class_id=["a", "b", "c"]), "class_id: values cannot be read as int64"),
    ("null not allowed", "exemplars", lambda r: r.update(class_id=[0, None, 1]), "class_id: is not nullable"),
    ("unknown column", "exemplars", lambda r: r.update(colour=[1, 2, 3]), "colour: unknown column"),
    ("below minimum", "exemplars", lambda r: r.update(rank=[1, 0, 2]), "rank: must be ≥ 1, got 0 at row 1"),
    ("wrong vector dimension", "experiences", lambda r: r.update(embedding=np.ones((1, 3))), "embedding: vector dimension must be 384, got 3"),
    ("value not allowed", "experiences", lambda r: r.update(kind=["guess"]), "kind: must be one of"),
    ("not finite", "experiences", lambda r: r.update(confidence=[float("nan")]), "confidence: must be finite"),
    ("ragged columns", "exemplars", lambda r: r.update(task_id=[0]), "columns have different lengths"),
]


@pytest.mark.parametrize("case,kind,mutate,message", BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_bad_writes_name_the_column_and_leave_table_unchanged(store: replaystore.Store, case, kind, mutate, message) -> None:
    good = exemplar_rows() if kind == "exemplars" else experience_rows()
    store.append(kind, good)
    before = (store.dataset(kind).version, store.count(kind))
    bad = exemplar_rows() if kind == "exemplars" else experience_rows()
    mutate(bad)
    with pytest.raises(ValidationError) as err:
        store.append(kind, bad)
    assert message in str(err.value)
    assert (store.dataset(kind).version, store.count(kind)) == before


def test_accepts_arrow_rows_and_lists_of_dicts(store: replaystore.Store) -> None:
    rows = [dict(zip(exemplar_rows(1), v)) for v in zip(*exemplar_rows(1).values())]
    store.append("exemplars", rows)
    store.append("exemplars", pa.table(exemplar_rows(2)))
    assert store.count("exemplars") == 3


def test_lossless_widening_allowed_but_float_to_int_refused() -> None:
    schema = schemas.load_spec("exemplars").arrow_schema()
    rows = exemplar_rows()
    rows["class_id"] = pa.array([0, 1, 2], pa.int8())
    assert schemas.conform(rows, schema).column("class_id").type == pa.int64()
    rows["class_id"] = pa.array([0.0, 1.0, 2.0])
    with pytest.raises(ValidationError, match="class_id: expected int64, got double"):
        schemas.conform(rows, schema)


def test_invalid_utf8_text_refused(store: replaystore.Store) -> None:
    row = {"sample_id": ["s"], "source": ["x"], "text": [b"\xff\xfe bad"], "content_hash": ["h"]}
    with pytest.raises(ValidationError, match="text"):
        store.append("general_samples", row)
    assert store.count("general_samples") == 0


def test_a_schema_file_may_pin_the_lance_file_format() -> None:
    raw = json.loads((schemas.SCHEMA_DIR / "experiences.json").read_text())
    assert schemas.parse_spec(raw).data_storage_version == "2.1"
    assert schemas.parse_spec({**raw, "lance": {}}).data_storage_version is None


def test_a_field_may_name_its_scalar_index_without_changing_the_arrow_schema() -> None:
    raw = json.loads((schemas.SCHEMA_DIR / "priorities.json").read_text())
    spec = schemas.parse_spec(raw)
    assert spec.scalar_indexes == {"source": "BITMAP", "sample_id": "BTREE"}
    plain = schemas.parse_spec({**raw, "fields": [{k: v for k, v in f.items() if k != "index"} for f in raw["fields"]]})
    assert plain.scalar_indexes == {}
    assert plain.arrow_schema().equals(spec.arrow_schema(), check_metadata=True)
    bad = {**raw, "fields": [{**raw["fields"][0], "index": "HASH"}, *raw["fields"][1:]]}
    with pytest.raises(ValidationError) as err:
        schemas.parse_spec(bad)
    assert err.value.field == "source.index"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"data_storage_version": "3.7"}, "lance.data_storage_version"),
        ({"data_storage_version": 2.1}, "lance.data_storage_version"),
        ({"file_format": "2.1"}, "lance.file_format"),
        ("2.1", "lance"),
    ],
)
def test_unknown_lance_settings_are_refused_by_name(section: object, field: str) -> None:
    raw = json.loads((schemas.SCHEMA_DIR / "experiences.json").read_text())
    with pytest.raises(ValidationError) as err:
        schemas.parse_spec({**raw, "lance": section})
    assert err.value.field == field


def _raw_strings(pieces: list[bytes], offset: int) -> pa.Array:
    """A string array built from raw buffers (Arrow checks neither UTF-8 nor offsets then), sliced at `offset`."""
    ends = np.cumsum([0, *map(len, pieces)]).astype(np.int32)
    array = pa.Array.from_buffers(pa.string(), len(pieces), [None, pa.py_buffer(ends.tobytes()), pa.py_buffer(b"".join(pieces))])
    return array.slice(min(offset, len(pieces)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=6) | st.text(max_size=4).map(str.encode), min_size=1, max_size=8), st.integers(0, 3))
def test_text_is_refused_exactly_when_arrow_finds_it_invalid(pieces: list[bytes], offset: int) -> None:
    """The ASCII fast path and the min_length byte screen decide as full validation and character counts would."""
    column = _raw_strings(pieces, offset)
    rows = {**exemplar_rows(len(column)), "buffer": column}
    schema = schemas.load_spec("exemplars").arrow_schema()
    try:
        column.validate(full=True)
        texts = column.to_pylist()
    except pa.ArrowInvalid:
        with pytest.raises(ValidationError, match="buffer: text must be valid UTF-8"):
            schemas.conform(rows, schema)
        return
    if any(len(t) < 1 for t in texts):
        with pytest.raises(ValidationError, match="buffer: must have length ≥ 1"):
            schemas.conform(rows, schema)
    else:
        assert schemas.conform(rows, schema).column("buffer").to_pylist() == texts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.none() | st.text(max_size=4), max_size=6), min_size=1, max_size=3), st.integers(0, 2))
def test_byte_screen_agrees_with_arrow(chunks: list[list[str | None]], offset: int) -> None:
    """The one-pass screen of a string column (nulls, chunks and slices included) gives the fewest
    bytes of any value and whether all of them are ASCII, as Arrow's own kernels would."""
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], pa.string())
    column = column.slice(min(offset, len(column)))
    screen = schemas._screen_bytes(column)
    assert screen is not None
    values = [v for v in column.to_pylist() if v is not None]
    assert screen.shortest == (min(len(v.encode()) for v in values) if values else None)
    assert screen.ascii == all(v.isascii() for v in values)  # Arrow leaves a null's slot empty


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=5), min_size=1, max_size=3), st.booleans())
def test_range_checks_find_the_first_value_out_of_range(chunks: list[list[int]], floats: bool) -> None:
    """A column with a minimum is refused exactly when a value is below it, naming the first such
    row, in one chunk or several: integers (`rank` ≥ 1, numpy's extremes) and floats (`priority` ≥ 0, Arrow's)."""
    kind, name, least = ("priorities", "priority", 0) if floats else ("exemplars", "rank", 1)
    column = pa.chunked_array([pa.array(c, pa.float64() if floats else pa.int32()) for c in chunks])
    values = column.to_pylist()
    n = len(values)
    others = {"source": ["s"] * n, "sample_id": ["1"] * n} if floats else exemplar_rows(n)
    bad = [i for i, v in enumerate(values) if v < least]
    if bad:
        with pytest.raises(ValidationError, match=f"{name}: must be ≥ {least}, got {values[bad[0]]} at row {bad[0]}$"):
            schemas.conform({**others, name: column}, schemas.load_spec(kind).arrow_schema())
    else:
        assert schemas.conform({**others, name: column}, schemas.load_spec(kind).arrow_schema()).column(name).to_pylist() == values
