"""`replaystore curriculum …` through a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import replaystore
from tests.conftest import run_cli


def _source(uri: str, n: int = 50) -> None:
    lengths = np.random.default_rng(0).integers(1, 20, n)
    replaystore.open(uri).append(
        "exemplars",
        {
            "buffer": ["b"] * n,
            "sample_id": np.arange(n),
            "class_id": np.zeros(n, dtype=np.int64),
            "task_id": np.zeros(n, dtype=np.int64),
            "tokens": [[7] * k for k in lengths],
            "rank": np.ones(n, dtype=np.int32),
            "nbytes": np.ones(n, dtype=np.int64),
        },
    )


@pytest.mark.slow  # eight CLI processes, each importing the stack (about 4 s apiece here)
def test_score_order_list_compare_plot_and_import(tmp_path: Path) -> None:
    uri = str(tmp_path / "s")
    _source(uri)
    ds = tmp_path / "ds.json"
    ds.write_text(
        json.dumps(
            {
                "curriculum_metrics": {
                    "seq_len": {
                        "difficulty_type": "percentile",
                        "min_difficulty": 10,
                        "max_difficulty": 100,
                        "schedule_type": "fixed_discrete",
                        "schedule_config": {"difficulty": [10, 50, 100], "max_step": [5, 10]},
                    }
                }
            }
        )
    )
    script = [
        ("curriculum", "score-length", "exemplars", "--column", "tokens"),
        ("curriculum", "order", "short", "exemplars", "--metric", "seq_len", "--pacing", '{"type": "sqrt", "c0": 0.2, "T": 30}'),
        ("curriculum", "order", "long", "exemplars", "--metric", "seq_len", "--direction", "hard_to_easy"),
        ("curriculum", "import-deepspeed", str(ds), "--source", "exemplars"),
        ("curriculum", "plot", "short", str(tmp_path / "short.png")),
    ]
    for args in script:
        run_cli(*args, uri=uri, check=True)
    listing = json.loads(run_cli("--json", "curriculum", "list", uri=uri, check=True).stdout)
    assert [r["ordering"] for r in listing] == ["deepspeed-seq_len", "long", "short"]
    assert listing[0]["definition"]["pacing"] == {"type": "discrete", "difficulties": [0.1, 0.5, 1.0], "steps": [4, 9]}  # DeepSpeed steps 1-5, 6-10
    compared = json.loads(run_cli("--json", "curriculum", "compare", "short", "long", "--k", "10", uri=uri, check=True).stdout)
    assert compared["kendall_tau"] == -1.0 and compared["shared"] == 50
    assert (tmp_path / "short.png").read_bytes()[:4] == b"\x89PNG"

    bad = run_cli("curriculum", "order", "x", "exemplars", "--metric", "loss", uri=uri)
    assert bad.returncode != 0 and "unknown metric 'loss'" in bad.stderr and "seq_len" in bad.stderr
    bad = run_cli("curriculum", "order", "x", "exemplars", "--metric", "seq_len", "--pacing", '{"type": "linear", "c0": 2, "T": 5}', uri=uri)
    assert bad.returncode != 0 and "c0" in bad.stderr and "(0, 1]" in bad.stderr
