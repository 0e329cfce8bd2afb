"""`replaystore demo` end to end at a reduced size, through the real CLI: Ray Train, Prefect, the store.

The `--small` run costs over a minute (a Ray Train worker group and a Prefect server start), so it
runs once per module and the tests below read what it left; the rerun trains one task only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import replaystore
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


def test_running_the_demo_again_on_its_store_starts_from_scratch(demo: DemoRun) -> None:
    """A rerun on the populated store (reset drops the last run's tables, buffer settings and scores are
    rewritten) gives the first run's numbers; one task is enough to see leftovers in the task table,
    the exemplar buffer or the curriculum scores."""
    again = run_cli("demo", "--small", "--tasks", "1", "--no-text", "--output", str(demo.out), uri=demo.uri, check=True, timeout=600)
    assert "Digits summary (class-incremental, 1 tasks" in again.stdout
    rerun = json.loads((demo.out / "results.json").read_text())["digits"]
    for name, first in demo.results["digits"].items():
        assert rerun[name]["accuracy"] == [[first["accuracy"][0][0]]], name
        assert list(map(_accounting, rerun[name]["budgets"])) == list(map(_accounting, first["budgets"][:1])), name
    store = replaystore.open(demo.uri)
    assert sorted(n for n in store.table_names() if n.startswith("digits-")) == [
        "digits-finetune-task0", "digits-replay-exemplars", "digits-replay-task0"
    ]  # fmt: skip
    assert store.count("digits-replay-task0") == demo.tables["digits-replay-task0"]


def _accounting(budget: dict[str, Any]) -> dict[str, Any]:
    """A budget report without its on-disk size (Lance file layout, not the byte budget)."""
    return {k: v for k, v in budget.items() if k != "disk_bytes"}
