"""`replaystore sql` as a user runs it: every output format, time travel, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import replaystore
from replaystore.cli import main
from tests.conftest import run_cli
from tests.sql_data import exemplar_rows

QUERY = "SELECT class_id, COUNT(*) AS n, ARRAY_AGG(rank ORDER BY rank) AS ranks FROM exemplars GROUP BY class_id ORDER BY class_id"
EXPECTED = [{"class_id": 0, "n": 2, "ranks": [1, 2]}, {"class_id": 1, "n": 3, "ranks": [1, 2, 3]}, {"class_id": 2, "n": 4, "ranks": [1, 2, 3, 4]}]


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = replaystore.open(str(tmp_path_factory.mktemp("cli") / "store"))
    store.append("exemplars", exemplar_rows())
    store.delete("exemplars", "class_id = 2")
    return store.uri


def test_table_format(uri: str) -> None:
    out = run_cli("sql", QUERY, "--version", "exemplars=2", uri=uri, check=True).stdout.splitlines()
    assert out[0].split() == ["class_id", "n", "ranks"]
    assert [line.split(maxsplit=2) for line in out[2:]] == [["0", "2", "[1, 2]"], ["1", "3", "[1, 2, 3]"], ["2", "4", "[1, 2, 3, 4]"]]


def test_json_and_csv_formats(uri: str) -> None:
    as_json = run_cli("sql", QUERY, "--format", "json", "--version", "exemplars=2", uri=uri, check=True).stdout
    assert json.loads(as_json) == EXPECTED
    latest = run_cli("sql", QUERY, "--format", "csv", uri=uri, check=True).stdout  # class 2 deleted in the latest version
    assert latest.splitlines() == ["class_id,n,ranks", '0,2,"[1,2]"', '1,3,"[1,2,3]"']


def test_parquet_and_csv_files(uri: str, tmp_path: Path) -> None:
    parquet, csv = tmp_path / "out.parquet", tmp_path / "out.csv"
    query = "SELECT sample_id, data, shape FROM exemplars ORDER BY sample_id"
    assert run_cli("sql", query, "--format", "parquet", "--output", str(parquet), uri=uri, check=True).stdout.strip() == f"wrote 5 rows to {parquet}"
    run_cli("sql", query, "--format", "csv", "--output", str(csv), uri=uri, check=True)
    frame = pl.read_parquet(parquet)
    assert frame["sample_id"].to_list() == [1, 2, 101, 102, 103]
    assert frame["data"].to_list() == [bytes([0, 1]), bytes([0, 2]), bytes([1, 1]), bytes([1, 2]), bytes([1, 3])]
    lines = csv.read_text().splitlines()
    assert lines[0] == "sample_id,data,shape" and lines[1] == '1,AAE=,"[32,32,3]"' and len(lines) == 6


def test_empty_results_in_every_format(uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT class_id, data FROM exemplars WHERE class_id > 99"
    for fmt, expected in [("table", "(no rows)"), ("csv", "class_id,data"), ("json", "[]")]:
        assert main(["--uri", uri, "sql", query, "--format", fmt]) == 0
        assert capsys.readouterr().out.strip() == expected
    out = tmp_path / "empty.parquet"
    assert main(["--uri", uri, "sql", query, "--format", "parquet", "--output", str(out)]) == 0
    assert pl.read_parquet(out).columns == ["class_id", "data"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["DROP TABLE exemplars"], "error: QueryRefusedError: query: refused: DROP changes the catalog"),
        (["SELECT * FORM exemplars"], "error: QuerySyntaxError: query: syntax error: Invalid expression / Unexpected token at line 1, column 23"),
        (["SELECT 1", "--format", "parquet"], "error: ValidationError: --output: parquet is binary"),
        (["SELECT 1", "--version", "exemplars"], "error: ValidationError: --version: expected TABLE=N or TABLE=TAG"),
    ],
)
def test_errors_are_one_line(uri: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--uri", uri, "sql", *args]) == 1  # in-process: the same entry point, without a subprocess per case
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1
    assert replaystore.open(uri).dataset("exemplars").version == 3
