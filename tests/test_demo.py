"""`replaystore demo` end to end at a reduced size, through the real CLI: Ray Train, Prefect, the store.

The `--small` run costs over a minute (a Ray Train worker group and a Prefect server start), so it
runs once per module and the tests below read what it left (reset is checked on a copy of its store).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import replaystore
from replaystore.cli.demo import PREFIXES, reset
from replaystore.exemplars.settings import SETTINGS_TABLE
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the module's demo run takes minutes on a loaded machine


@dataclass
class DemoRun:
    uri: str
    out: Path
    stdout: str
    results: dict[str, Any]
    files: set[str]
    report: str
    tables: dict[str, int]  # rows per table right after the run


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    folder = tmp_path_factory.mktemp("demo")
    uri, out = str(folder / "store"), folder / "out"
    proc = run_cli("demo", "--small", "--seed", "0", "--output", str(out), uri=uri, check=True, timeout=900)
    store = replaystore.open(uri)
    return DemoRun(
        uri=uri, out=out, stdout=proc.stdout, results=json.loads((out / "results.json").read_text()),
        files={p.name for p in out.iterdir()}, report=(out / "report.md").read_text(),
        tables={name: store.count(name) for name in store.table_names()},
    )  # fmt: skip


def test_demo_reports_sane_numbers_and_replay_forgets_less(demo: DemoRun) -> None:
    assert "Digits summary" in demo.stdout and "General-text loss" in demo.stdout
    replay, finetune = demo.results["digits"]["replay"], demo.results["digits"]["fine-tuning"]
    for run in (replay, finetune):
        acc = run["accuracy"]
        assert len(acc) == 3 and all(len(row) == 3 for row in acc)  # --small: 3 tasks
        assert all(0.0 <= a <= 1.0 for row in acc for a in row)
        assert all(acc[i][i] > 0.8 for i in range(3)), "each task is learned when it is trained"
    assert replay["forgetting"] < finetune["forgetting"]
    assert replay["average_accuracy"] > finetune["average_accuracy"] + 0.2
    for budget in replay["budgets"]:
        assert budget["model_bytes"] + budget["exemplar_bytes"] <= budget["total_bytes"]
    text = demo.results["text"]
    assert set(text["general_loss"]) == {"fine-tuning", "TM replay"}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in text["general_loss"].values())


def test_demo_writes_the_report_and_plots(demo: DemoRun) -> None:
    assert demo.files >= {"report.md", "results.json", "accuracy.png", "budget.png"}
    assert "accuracy matrix" in demo.report


def test_demo_leaves_its_exemplars_and_activation_states_in_the_store(demo: DemoRun) -> None:
    per_class = demo.results["digits"]["replay"]["budgets"][-1]["per_class"]
    assert len(per_class) == 6 and demo.tables["digits-replay-exemplars"] == sum(per_class.values()) <= 200
    assert demo.tables.get("activation_states", 0) > 0


def test_reset_on_a_copy_of_the_demo_store_drops_the_last_run_and_nothing_else(demo: DemoRun, tmp_path: Path) -> None:
    """What makes a rerun start from scratch (its numbers are seeded): reset drops the demo's task
    tables, exemplar buffer and buffer settings, and keeps everything else. Checked in process on a
    copy of the store — a second CLI run would cost another minute of Ray and Prefect start-up."""
    uri = str(tmp_path / "store")
    shutil.copytree(demo.uri, uri)
    store = replaystore.open(uri)
    store.create_table("keep-me", "exemplar_buffers")
    before = set(store.table_names())
    assert any(name.startswith(PREFIXES) for name in before)
    reset(store)
    after = set(store.table_names())
    assert after == {name for name in before if not name.startswith(PREFIXES)}
    assert store.count(SETTINGS_TABLE, filter=" OR ".join(f"buffer LIKE '{p}%'" for p in PREFIXES)) == 0
    kept = after - {"keep-me", SETTINGS_TABLE}  # the GeRe tables and anything else survive unchanged
    assert {name: store.count(name) for name in kept} == {name: demo.tables[name] for name in kept}
