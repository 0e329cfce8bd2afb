"""`replaystore demo` end to end with its defaults, through the real CLI: Ray Train, Prefect, the store.

The default run costs a few minutes (a Ray Train worker group, Prefect flows, a tiny GPT-2 trained
from scratch), so it runs once per module and the tests below read what it left (reset is checked
on a copy of its store). The targets are issue 20's: the full system beats the plain loop a user
would write, and the recommended GeRe replay keeps the general loss at little cost to the newest task.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import replaystore
from replaystore.cli.demo import PREFIXES, DemoOptions, Plan, reset
from replaystore.exemplars.settings import SETTINGS_TABLE
from tests.conftest import run_cli
from tests.test_ui import browser, count, loaded_images, snapshot, start_ui, stop, visit  # noqa: F401 - browser is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the module's demo runs take minutes on a loaded machine


@dataclass
class DemoRun:
    uri: str
    out: Path
    stdout: str
    stderr: str
    results: dict[str, Any]
    files: set[str]
    report: str
    tables: dict[str, int]  # rows per table right after the run


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    folder = tmp_path_factory.mktemp("demo")
    uri, out = str(folder / "store"), folder / "out"
    proc = run_cli("demo", "--seed", "0", "--output", str(out), uri=uri, check=True, timeout=1500)
    store = replaystore.open(uri)
    return DemoRun(
        uri=uri, out=out, stdout=proc.stdout, stderr=proc.stderr, results=json.loads((out / "results.json").read_text()),
        files={p.name for p in out.iterdir()}, report=(out / "report.md").read_text(),
        tables={name: store.count(name) for name in store.table_names()},
    )  # fmt: skip


def test_the_progress_bar_counts_to_its_total(demo: DemoRun) -> None:
    """The bar's total is planned before the run (`Plan.steps`); the run reports exactly that many steps."""
    done, total = re.findall(r"demo: (\d+)/(\d+) steps", demo.stderr)[-1]
    assert done == total and int(total) == Plan.of(DemoOptions()).steps(with_text=True)


def test_demo_reports_sane_numbers_and_replay_forgets_less(demo: DemoRun) -> None:
    assert "Digits summary" in demo.stdout and "General-text loss" in demo.stdout
    digits = demo.results["digits"]
    replay, finetune = digits["replay"], digits["fine-tuning"]
    for run in digits.values():
        acc = run["accuracy"]
        assert len(acc) == 5 and all(len(row) == 5 for row in acc)
        assert all(0.0 <= a <= 1.0 for row in acc for a in row)
        assert all(acc[i][i] > 0.8 for i in range(5)), "each task is learned when it is trained"
        assert set(run["average_accuracy"]) == {"mean", "std"}
    assert finetune["forgetting"]["mean"] > 0.9, "fine-tuning forgets"
    assert replay["forgetting"]["mean"] < finetune["forgetting"]["mean"]
    for budget in replay["budgets"]:
        assert budget["model_bytes"] + budget["exemplar_bytes"] <= budget["total_bytes"]
    assert 0.0 <= replay["nme_accuracy"]["mean"] <= 1.0


def test_the_full_system_beats_the_plain_loop_and_approaches_joint_training(demo: DemoRun) -> None:
    digits = demo.results["digits"]
    (plain,) = [run for name, run in digits.items() if "plain" in name]
    (joint,) = [run for name, run in digits.items() if "joint" in name]
    replay = digits["replay"]["average_accuracy"]["mean"]
    assert replay >= 0.93
    assert replay >= plain["average_accuracy"]["mean"]
    assert replay <= joint["average_accuracy"]["mean"] + 0.02  # joint training is the upper bound


def test_recommended_gere_replay_keeps_the_general_loss_at_little_cost_to_the_newest_task(demo: DemoRun) -> None:
    text = demo.results["text"]
    assert "fine-tuning" in text["general_loss"] and any("CE" in v for v in text["general_loss"])
    tm = text["recommended"]
    assert "TM" in tm
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in text["general_loss"].values())
    general, task, finetune = text["general_loss"][tm], text["task_loss"][tm], text["task_loss"]["fine-tuning"]
    assert general[-1] <= general[0], "general loss at or below its value before fine-tuning"
    assert task[-1] <= 1.10 * finetune[-1], "newest task's loss within 10% of fine-tuning's"
    assert text["general_loss"]["fine-tuning"][-1] > general[0] + 0.5, "without replay the general text is forgotten"
    pre = text["pretraining"]
    assert max(pre["pretrained"]) < min(pre["untrained"]) - 2.0, "the tiny LM is competent at general text before fine-tuning"


def test_demo_keeps_eighty_percent_with_fifty_exemplars(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("demo", "--budget", "50", "--no-text", "--output", str(out), uri=str(tmp_path / "store"), check=True, timeout=1500)
    digits = json.loads((out / "results.json").read_text())["digits"]
    assert digits["replay"]["average_accuracy"]["mean"] >= 0.80
    assert sum(digits["replay"]["budgets"][-1]["per_class"].values()) <= 50


def test_demo_writes_the_report_and_plots(demo: DemoRun) -> None:
    assert demo.files >= {"report.md", "results.json", "accuracy.png", "budget.png", "tradeoff.png"}
    assert "accuracy matrix" in demo.report


def test_demo_leaves_its_exemplars_and_activation_states_in_the_store(demo: DemoRun) -> None:
    per_class = demo.results["digits"]["replay"]["budgets"][-1]["per_class"]
    assert len(per_class) == 10 and demo.tables["digits-replay-s0-exemplars"] == sum(per_class.values()) <= 200
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


def test_the_web_view_shows_the_demo_store_in_a_real_browser(demo: DemoRun, browser: Any) -> None:  # noqa: F811 - the fixture
    """`replaystore ui` over the store the demo filled: every table listed, the replay buffer's budget
    charts and kept digits, the GeRe model's statistics; the pages change nothing. Screenshots go to
    the UI tests' artifact folder under `demo-*`."""
    from selenium.webdriver.common.by import By

    store = replaystore.open(demo.uri)
    before = snapshot(store)
    proc, base = start_ui(demo.uri)
    try:
        visit(browser, f"{base}/", "demo-store")
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#tables tbody td:first-child a")] == store.table_names()
        buffer = "digits-replay-s0-exemplars"
        visit(browser, f"{base}/exemplars/{buffer}", "demo-exemplars")
        classes = store.sql(f'SELECT class_id, COUNT(*) AS n FROM "{buffer}" GROUP BY class_id').rows()
        assert count(browser, "#exemplar-grid tbody tr") == len(classes) == 10
        assert loaded_images(browser) == sum(min(n, 24) for _, n in classes), "the kept digits render as images"
        assert count(browser, "svg.chart rect.mark") > 0, "budget and per-class charts over the buffer's versions"
        visit(browser, f"{base}/gere", "demo-gere")
        assert count(browser, "section.model svg.chart") >= 2
    finally:
        stop(proc)
    assert snapshot(replaystore.open(demo.uri)) == before


def test_the_demo_starts_a_ray_of_its_own_beside_a_cluster_already_running() -> None:
    """Ray joins the latest cluster started on the machine unless told otherwise, and then refuses the
    demo's `num_cpus`; the demo must start its own (it failed so in CI beside test_scaleout's cluster)."""
    import ray
    from ray.cluster_utils import Cluster

    from replaystore.cli.demo import start_local_ray

    neighbour = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        start_local_ray()
        try:
            assert ray.get_runtime_context().gcs_address != neighbour.address
            assert ray.cluster_resources()["CPU"] == 2
        finally:
            ray.shutdown()
    finally:
        neighbour.shutdown()
