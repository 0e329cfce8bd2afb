"""SQL over every table kind: checked results, joins, windows, time travel, pushdown, streaming."""

from __future__ import annotations

import lance
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.errors import NotFoundError, ValidationError
from replaystore.query import plan
from tests.sql_data import exemplar_rows, experience_rows, fill


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> replaystore.Store:
    store = replaystore.open(str(tmp_path_factory.mktemp("sql") / "store"))
    fill(store)
    return store


def rows(frame: pl.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.iter_rows()]


def test_exemplars_per_class_and_bytes(filled: replaystore.Store) -> None:
    got = filled.sql("SELECT class_id, COUNT(*) AS n, SUM(nbytes) AS bytes FROM exemplars GROUP BY class_id ORDER BY class_id")
    expected: dict[int, int] = {}
    for row in exemplar_rows():
        expected[row["class_id"]] = expected.get(row["class_id"], 0) + 1
    assert rows(got) == [(c, n, 3072 * n) for c, n in sorted(expected.items())]


def test_experiences_retrieved_often_never_helped(filled: replaystore.Store) -> None:
    got = filled.sql("SELECT experience_id FROM experiences WHERE freq >= 5 AND utility = 0 ORDER BY experience_id")
    expected = sorted(r["experience_id"] for r in experience_rows() if r["freq"] >= 5 and r["utility"] == 0)
    assert got["experience_id"].to_list() == expected == ["e1", "e3"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT COUNT(*), SUM(token_count), MAX(LENGTH(text)) FROM general_samples", [(4, 10, 40)]),
        ("SELECT layer, count FROM activation_stats WHERE model_fingerprint = 'm1' ORDER BY layer", [(1, 10), (2, 20)]),
        ("SELECT precision, COUNT(*), SUM(token_count * hidden_dim) FROM activation_states GROUP BY 1 ORDER BY 1",
         [("float16", 2, 10), ("float32", 1, 2)]),
        ("SELECT sample_id FROM curriculum_scores WHERE metric = 'length' AND percentile <= 0.5 ORDER BY 1", [("g1",), ("g2",)]),
        ("SELECT sample_id, position FROM curriculum_orderings WHERE ordering = 'by-length' AND position < 2 ORDER BY 2",
         [("g1", 0), ("g2", 1)]),
        ("SELECT ROUND(SUM(priority), 2) FROM priorities", [(5.0,)]),
        ("SELECT experience_id, ARRAY_LENGTH(tags) FROM experiences WHERE kind = 'failure' ORDER BY 1", [("e1", 2), ("e3", 2)]),
    ],
)  # fmt: skip
def test_each_table_kind(filled: replaystore.Store, query: str, expected: list[tuple]) -> None:
    assert rows(filled.sql(query)) == expected


def test_join_across_two_tables(filled: replaystore.Store) -> None:
    # which samples does ordering 'by-length' admit at position < 3, with their score?
    got = filled.sql("""
        SELECT o.sample_id, s.value FROM curriculum_orderings o
        JOIN curriculum_scores s ON o.sample_id = s.sample_id AND o.source = s.source
        WHERE o.ordering = 'by-length' AND o.position < 3 ORDER BY o.position""")
    assert rows(got) == [("g1", 10.0), ("g2", 20.0), ("g3", 30.0)]


def test_cte_and_window_functions(filled: replaystore.Store) -> None:
    got = filled.sql("""
        WITH ranked AS (
            SELECT class_id, sample_id, ROW_NUMBER() OVER (PARTITION BY class_id ORDER BY rank DESC) AS r FROM exemplars)
        SELECT class_id, sample_id FROM ranked WHERE r = 1 ORDER BY class_id""")
    assert rows(got) == [(0, 2), (1, 103), (2, 204)]  # each class's worst-ranked exemplar (cut first)


def test_time_travel_after_update(filled: replaystore.Store, tmp_path) -> None:
    store = replaystore.open(str(tmp_path / "tt"))
    before = store.append("experiences", experience_rows(), params={"embedding_dim": 4})
    store.update("experiences", {"utility": "utility + 10"}, where="experience_id = 'e1'")
    query = "SELECT utility FROM experiences WHERE experience_id = 'e1'"
    assert store.sql(query)["utility"].to_list() == [10]
    assert store.sql(query, versions={"experiences": before})["utility"].to_list() == [0]
    store.tag("experiences", before, "before-update")
    assert store.sql(query, versions={"experiences": "before-update"})["utility"].to_list() == [0]


def test_plan_reads_the_snapshot_it_opened(tmp_path) -> None:
    store = replaystore.open(str(tmp_path / "snap"))
    store.append("exemplars", exemplar_rows())
    frame, _ = plan(store, "SELECT COUNT(*) AS n FROM exemplars")
    store.append("exemplars", exemplar_rows())
    assert frame.collect()["n"].to_list() == [len(exemplar_rows())]
    assert store.sql("SELECT COUNT(*) AS n FROM exemplars")["n"].to_list() == [2 * len(exemplar_rows())]


def test_projection_and_filter_reach_the_lance_scan(filled: replaystore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, _ = plan(filled, "SELECT sample_id FROM exemplars WHERE task_id = 1")
    assert "columns: sample_id, task_id; filter: (task_id == 1)" in frame.explain()
    calls: list[dict] = []
    scanner = lance.LanceDataset.scanner

    def recorded(self: lance.LanceDataset, *args: object, **kwargs: object) -> lance.LanceScanner:
        calls.append(kwargs)
        return scanner(self, *args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "scanner", recorded)
    got = frame.collect()
    reads = [c for c in calls if c.get("columns") is not None]  # the others only ask Lance whether it can plan the filter
    assert [(c["columns"], str(c["filter"])) for c in reads] == [(["sample_id"], "(task_id == 1)")]  # the filter's column stays in Lance
    late = reads[0]["late_materialization"]  # fetched only for rows that pass: the wide columns, never strings or numbers
    assert {"data", "features", "tokens"} <= set(late) and not {"buffer", "sample_id", "task_id"} & set(late)
    assert sorted(got["sample_id"].to_list()) == sorted(r["sample_id"] for r in exemplar_rows() if r["task_id"] == 1)


def test_arrow_variant_matches(filled: replaystore.Store) -> None:
    query = "SELECT class_id, sample_id, data FROM exemplars ORDER BY sample_id"
    table = filled.sql_arrow(query)
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == filled.sql(query).to_dicts()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT sample_id, class_id FROM exemplars WHERE task_id >= 0",
        "SELECT sample_id, RANK() OVER (PARTITION BY class_id ORDER BY rank) AS r FROM exemplars",  # in-memory path
        "SELECT experience_id, UNNEST(tags) AS tag FROM experiences",  # in-memory path
    ],
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_rows=st.integers(min_value=1, max_value=12))
def test_batches_concatenate_to_the_eager_result(filled: replaystore.Store, query: str, batch_rows: int) -> None:
    batches = list(filled.sql_batches(query, batch_rows=batch_rows))
    assert all(0 < b.num_rows <= batch_rows for b in batches)
    streamed = pl.from_arrow(pa.Table.from_batches(batches))
    assert streamed.sort(streamed.columns).equals(filled.sql(query).sort(streamed.columns))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(threshold=st.integers(min_value=-1, max_value=300), limit=st.integers(min_value=0, max_value=20))
def test_filters_agree_with_python(filled: replaystore.Store, threshold: int, limit: int) -> None:
    got = filled.sql(f"SELECT sample_id FROM exemplars WHERE sample_id > {threshold} ORDER BY sample_id LIMIT {limit}")
    expected = sorted(r["sample_id"] for r in exemplar_rows() if r["sample_id"] > threshold)[:limit]
    assert got["sample_id"].to_list() == expected


@pytest.mark.parametrize(
    ("versions", "error", "match"),
    [
        ({"nope": 1}, NotFoundError, "unknown table 'nope'"),
        ({"exemplars": 999}, NotFoundError, "no version or tag 999"),
        ({"exemplars": "no-such-tag"}, NotFoundError, "no-such-tag"),
        ({"exemplars": 0}, ValidationError, r"versions\['exemplars'\]: must be a version number ≥ 1"),
        ({"exemplars": 1.5}, ValidationError, r"versions\['exemplars'\]"),
        ([("exemplars", 1)], ValidationError, "versions: must map table names"),
    ],
)
def test_bad_versions(filled: replaystore.Store, versions, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        filled.sql("SELECT COUNT(*) FROM exemplars", versions=versions)


@pytest.mark.parametrize("window", ["", ", ROW_NUMBER() OVER (ORDER BY rank) AS r"])
def test_empty_result_streams_one_empty_batch_with_its_schema(filled: replaystore.Store, window: str) -> None:
    batches = list(filled.sql_batches(f"SELECT sample_id, data{window} FROM exemplars WHERE class_id > 99"))
    assert [b.num_rows for b in batches] == [0]
    assert batches[0].schema.names == ["sample_id", "data"] + (["r"] if window else [])


def test_batches_refuse_when_called_not_when_iterated(filled: replaystore.Store) -> None:
    with pytest.raises(ValidationError, match="batch_rows: must be a whole number ≥ 1"):
        filled.sql_batches("SELECT 1", batch_rows=0)
    with pytest.raises(ValidationError, match="refused: DROP"):
        filled.sql_batches("DROP TABLE exemplars")


def test_engine_errors_are_one_line(filled: replaystore.Store) -> None:
    with pytest.raises(ValidationError) as info:
        filled.sql("SELECT no_such_column FROM exemplars")
    assert info.value.field == "query"
    assert "no_such_column" in str(info.value) and "\n" not in str(info.value)
