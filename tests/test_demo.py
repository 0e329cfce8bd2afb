"""`replaystore demo` end to end at a reduced size, through the real CLI: Ray Train, Prefect, the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import replaystore
from tests.conftest import run_cli


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_reports_sane_numbers_and_replay_forgets_less(tmp_path: Path) -> None:
    uri, out = str(tmp_path / "store"), tmp_path / "out"
    proc = run_cli("demo", "--small", "--seed", "0", "--output", str(out), uri=uri, check=True, timeout=900)
    assert "Digits summary" in proc.stdout and "General-text loss" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    replay, finetune = results["digits"]["replay"], results["digits"]["fine-tuning"]
    for run in (replay, finetune):
        acc = run["accuracy"]
        assert len(acc) == 3 and all(len(row) == 3 for row in acc)  # --small: 3 tasks
        assert all(0.0 <= a <= 1.0 for row in acc for a in row)
        assert all(acc[i][i] > 0.8 for i in range(3)), "each task is learned when it is trained"
    assert replay["forgetting"] < finetune["forgetting"]
    assert replay["average_accuracy"] > finetune["average_accuracy"] + 0.2
    for budget in replay["budgets"]:
        assert budget["model_bytes"] + budget["exemplar_bytes"] <= budget["total_bytes"]
    text = results["text"]
    assert set(text["general_loss"]) == {"fine-tuning", "TM replay"}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in text["general_loss"].values())
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.json", "accuracy.png", "budget.png"}
    assert "accuracy matrix" in (out / "report.md").read_text()

    store = replaystore.open(uri)
    per_class = replay["budgets"][-1]["per_class"]
    assert len(per_class) == 6 and store.count("digits-replay-exemplars") == sum(per_class.values()) <= 200
    assert store.exists("activation_states") and store.count("activation_states") > 0
    again = run_cli("demo", "--small", "--no-text", "--output", str(out), uri=uri, check=True, timeout=600)  # running twice works
    assert json.loads((out / "results.json").read_text())["digits"]["replay"]["accuracy"] == replay["accuracy"]
    assert "Digits summary" in again.stdout
