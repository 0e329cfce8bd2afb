"""Read-only confinement: every refused statement gets its one-line error and the store is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.errors import NotFoundError, ValidationError
from replaystore.query import QueryRefusedError, QuerySyntaxError, inspect
from tests.sql_data import fill

REFUSED = [
    ("INSERT INTO exemplars SELECT * FROM exemplars", "INSERT writes data"),
    ("UPDATE experiences SET freq = 0", "UPDATE writes data"),
    ("DELETE FROM exemplars WHERE class_id = 1", "DELETE writes data"),
    ("MERGE INTO priorities p USING priorities q ON p.sample_id = q.sample_id WHEN MATCHED THEN DELETE", "MERGE writes data"),
    ("TRUNCATE exemplars", "TRUNCATE writes data"),
    ("COPY exemplars TO '{tmp}/out.csv'", "COPY writes data"),
    ("SELECT * INTO copied FROM exemplars", "SELECT INTO writes data"),
    ("WITH gone AS (DELETE FROM exemplars RETURNING *) SELECT * FROM gone", "DELETE writes data"),
    ("CREATE TABLE t AS SELECT * FROM exemplars", "CREATE changes the catalog"),
    ("DROP TABLE exemplars", "DROP changes the catalog"),
    ("ALTER TABLE exemplars ADD COLUMN x INT", "ALTER changes the catalog"),
    ("ATTACH '{tmp}/other.db' AS other", "ATTACH changes the catalog"),
    ("INSTALL httpfs", "INSTALL changes the catalog"),
    ("LOAD httpfs", "LOAD is not a query"),
    ("SET threads = 1", "SET changes the catalog"),
    ("PRAGMA version", "PRAGMA changes the catalog"),
    ("BEGIN", "BEGIN changes the catalog"),
    ("SHOW TABLES", "SHOW is not a query"),
    ("EXPLAIN SELECT * FROM exemplars", "EXPLAIN is not a query"),
    ("DESCRIBE exemplars", "DESCRIBE is not a query"),
    ("SELECT 1; DROP TABLE exemplars", "2 statements given"),
    ("SELECT * FROM read_csv('{tmp}/secret.csv')", "function read_csv() reads outside the store"),
    ("SELECT * FROM read_parquet('https://example.com/x.parquet')", "function read_parquet() reads outside the store"),
    ("SELECT * FROM READ_JSON('{tmp}/x.json')", "function read_json() reads outside the store"),
    ("SELECT * FROM read_ipc('{tmp}/x.arrow')", "function read_ipc() reads outside the store"),
    ("SELECT * FROM read_csv_auto('{tmp}/secret.csv')", "function read_csv_auto() reads outside the store"),
    ("SELECT * FROM exemplars WHERE sample_id IN (SELECT a FROM read_csv('{tmp}/x.csv'))", "function read_csv() reads outside"),
    ("SELECT * FROM glob('{tmp}/*')", "function glob() reads outside the store"),
    ("SELECT * FROM '{tmp}/secret.csv'", "is a file or URL"),
    ('SELECT * FROM "s3://bucket/x.parquet"', "is a file or URL"),
    ("SELECT * FROM generate_series(1, 3)", "table function GENERATE_SERIES(1, 3) in FROM"),
    ("SELECT * FROM other.exemplars", "qualified name other.exemplars reaches outside the store"),
]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> replaystore.Store:
    store = replaystore.open(str(tmp_path_factory.mktemp("confine") / "store"))
    fill(store)
    return store


def snapshot(store: replaystore.Store, tmp: Path) -> tuple:
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if "_locks" not in p.parts)
    return tuple((name, store.dataset(name).version) for name in store.table_names()), tuple(files)


@pytest.mark.parametrize(("query", "error"), REFUSED)
def test_refused_before_execution_and_store_unchanged(filled: replaystore.Store, query: str, error: str) -> None:
    tmp = Path(filled.uri).parent
    (tmp / "secret.csv").write_text("a\n1\n")
    before = snapshot(filled, tmp)
    with pytest.raises(QueryRefusedError) as info:
        filled.sql(query.format(tmp=tmp))
    message = str(info.value)
    assert message.startswith("query: refused: ") and error in message and "\n" not in message
    assert snapshot(filled, tmp) == before


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("SELECT * FORM exemplars", "line 1, column 23"),
        ("SELECT class_id,\n  COUNT(*\nFROM exemplars", "line 3"),
        ("SELECT * FROM exemplars WHERE buffer = 'cifar", "unterminated ' opened at line 1, column 40"),
        ('SELECT "class_id FROM exemplars', 'unterminated " opened at line 1, column 8'),
        ("SELECT class_id * FROM exemplars", "incomplete expression at line 1, column 22 near 'FROM'"),
        ("SELECT * FROM exemplars WHERE", "incomplete WHERE at line 1, column 29"),
        ("SELECT * FROM exemplars ORDER BY", "incomplete ORDER BY"),
        ("SELECT * FROM digits-replay-exemplars", "near '-'; quote names that contain '-': \"digits-replay-exemplars\""),
    ],
)
def test_syntax_errors_are_one_line_with_a_position(filled: replaystore.Store, query: str, where: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        filled.sql(query)
    message = str(info.value)
    assert message.startswith("query: syntax error: ") and where in message and "\n" not in message
    assert "<" not in message and "sqlglot" not in message  # no parser internals (class names, tokens)
    assert ("quote names" in message) == ("-" in query)  # the hint only where a bare name has a '-'


@pytest.mark.parametrize("query", ["", "   ", ";", "-- only a comment", None])
def test_empty_statements(query: object) -> None:
    with pytest.raises(ValidationError, match="query: must"):
        inspect(query, ["exemplars"])  # type: ignore[arg-type]


def test_unknown_table_names_the_store_tables(filled: replaystore.Store) -> None:
    with pytest.raises(NotFoundError, match=r"unknown table 'exemplar' .*exemplars"):
        filled.sql("SELECT * FROM exemplar")


def test_ctes_and_quoted_names_resolve_to_store_tables() -> None:
    statement = inspect('WITH x AS (SELECT * FROM "my-buffer") SELECT * FROM x JOIN exemplars USING (sample_id)', ["my-buffer", "exemplars"])
    assert statement.tables == {"my-buffer", "exemplars"}
    assert statement.streamable
    assert not inspect("SELECT ROW_NUMBER() OVER () FROM exemplars", ["exemplars"]).streamable


_WORDS = st.sampled_from(["read", "scan", "glob", "READ", "Read", "sniff"])
_SUFFIX = st.sampled_from(["", "_csv", "_parquet", "_ndjson", "_delta", "_anything"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=_WORDS, suffix=_SUFFIX, in_from=st.booleans(), space=st.sampled_from(["", " ", "\n  "]))
def test_any_file_reading_function_is_refused(word: str, suffix: str, in_from: bool, space: str) -> None:
    call = f"{word}{suffix}{space}('/etc/passwd')"
    query = f"SELECT * FROM {call}" if in_from else f"SELECT {call} AS x FROM exemplars"
    with pytest.raises(QueryRefusedError, match=r"reads outside the store"):
        inspect(query, ["exemplars"])


@settings(max_examples=60, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True))
def test_only_store_tables_and_ctes_are_read(name: str) -> None:
    tables = ["exemplars", "experiences"]
    table = f'"{name}"'  # quoted: a name such as `as` is a keyword bare
    if name in tables:
        assert inspect(f"SELECT * FROM {table}", tables).tables == {name}
    else:
        with pytest.raises(NotFoundError, match=f"unknown table '{name}'"):
            inspect(f"SELECT * FROM {table}", tables)
    assert inspect(f"WITH {table} AS (SELECT 1 AS a) SELECT * FROM {table}", tables).tables == set()


def test_a_keyword_as_a_bare_table_name_is_a_syntax_error_that_says_where() -> None:
    with pytest.raises(QuerySyntaxError, match="column 16 near 'as'"):
        inspect("SELECT * FROM as", ["exemplars"])
