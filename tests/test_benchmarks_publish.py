"""`python -m benchmarks` publishes its rows into docs/benchmarks.md: every row names its run
(command, commit, date, machine), a run replaces only the areas and scale it measured, and the
hand-written prose around the generated section survives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import publish
from benchmarks.common import Result

RUN = publish.Run(command="python -m benchmarks --only sql --scale 1.0", commit="abc1234", date="2026-12-04 09:00 UTC",
                  machine="x86_64, 2 cores, Python 3.11.7", scale=1.0)  # fmt: skip
SQL = [Result("sql", "group-by, 10,000,000 rows scanned", "seconds", 0.5, 0.8, "DuckDB on the same Lance data", higher_is_better=False)]
STORE = [Result("store", "append 10,000 rows", "ms per commit", 9.0, None, "raw Lance", higher_is_better=False, notes="could not run: why")]


def _rows_of(section: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]


def test_every_row_names_a_run_listed_with_its_command_commit_date_and_machine() -> None:
    older = publish.Run(
        command="python -m benchmarks --scale 0.1", commit="not recorded", date="2026-11-26 15:54 UTC", machine="x86_64, 2 cores, Python 3.11.7", scale=0.1
    )
    rows = publish.merge(publish.merge([], older, {"store": STORE}), RUN, {"sql": SQL})
    section = publish.render(rows)
    runs = dict(re.findall(r"- \*\*(R\d+)\*\* \(scale [\d.]+\): (.+)", section))
    assert runs == {"R1": older.describe(), "R2": RUN.describe()}
    for run in (older, RUN):
        assert all(field in section for field in (f"`{run.command}`", run.commit, run.date, run.machine))
    table = _rows_of(section)
    assert [(r[0], r[-1]) for r in table] == [("sql", "R2"), ("store", "R1")]
    assert table[0][6] == "1.60"  # DuckDB 0.8 s / ours 0.5 s: > 1 is better whatever the metric's direction
    assert table[1][5] == "" and table[1][8] == "could not run: why"  # a peer that could not run says why


def test_a_run_replaces_the_rows_of_its_areas_at_its_scale_only() -> None:
    small = publish.Run(**{**RUN.__dict__, "scale": 0.1, "command": "python -m benchmarks --scale 0.1"})
    rows = publish.merge([], small, {"sql": SQL, "store": STORE})
    rerun = [Result("sql", "group-by, 10,000,000 rows scanned", "seconds", 0.4, 0.8, "DuckDB on the same Lance data", higher_is_better=False)]
    rows = publish.merge(rows, RUN, {"sql": rerun})
    rows = publish.merge(rows, publish.Run(**{**RUN.__dict__, "date": "2026-12-04 10:00 UTC"}), {"sql": rerun})
    assert sorted((r["area"], r["run"]["scale"], r["ours"]) for r in rows) == [("sql", 0.1, 0.5), ("sql", 1.0, 0.4), ("store", 0.1, 9.0)]


def test_the_generated_section_is_replaced_and_the_prose_around_it_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nHand-written intro.\n\n{publish.BEGIN}\nold table\n{publish.END}\n\n## Where the time goes\n\nNotes.\n")
    publish.write_doc(publish.render(publish.merge([], RUN, {"sql": SQL})), doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n\n" + publish.BEGIN)
    assert text.endswith(publish.END + "\n\n## Where the time goes\n\nNotes.\n")
    assert "old table" not in text and text.count(publish.BEGIN) == 1 and "DuckDB on the same Lance data" in text


def test_a_page_without_markers_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nno markers here\n")
    with pytest.raises(SystemExit, match="markers are missing"):
        publish.write_doc(publish.render([]), doc)
    assert doc.read_text() == "# Benchmarks\n\nno markers here\n"


def test_this_checkouts_run_records_the_command_commit_and_machine() -> None:
    run = publish.current_run(0.1, ["--only", "sql", "--scale", "0.1"])
    assert run.command == "python -m benchmarks --only sql --scale 0.1"
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", run.commit), run.commit
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", run.date)
    assert re.fullmatch(r"\S+, \d+ cores, Python \d+\.\d+\.\d+", run.machine)


def test_the_published_docs_table_is_the_one_generated_from_the_record() -> None:
    text = publish.DOC.read_text()
    section = text[text.index(publish.BEGIN) : text.index(publish.END) + len(publish.END)]
    rendered = publish.render(publish.load())
    runs = [line for line in section.splitlines() if line.startswith("- **R")]
    assert _rows_of(section) == _rows_of(rendered) and runs == [line for line in rendered.splitlines() if line.startswith("- **R")]
