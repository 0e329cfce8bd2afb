"""DeepSpeed data-efficiency curriculum configs become ordering definitions that pace exactly alike."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from replaystore import Store
from replaystore.curriculum import (
    DiscretePacing,
    OrderingDefinition,
    SequenceLength,
    build_ordering,
    curriculum_sampler,
    from_deepspeed,
    score,
)
from replaystore.errors import ValidationError


def deepspeed_difficulty(cfg: dict, step: int) -> float:
    """DeepSpeed's scheduler at its (1-based) step, restated from its documentation (test reference)."""
    sc = cfg["schedule_config"]
    low, high = cfg["min_difficulty"], cfg["max_difficulty"]
    if cfg["schedule_type"] == "fixed_discrete":
        for difficulty, max_step in zip(sc["difficulty"], sc["max_step"]):
            if step <= max_step:
                return difficulty
        return sc["difficulty"][-1]
    root = 1 if cfg["schedule_type"] == "fixed_linear" else sc["root_degree"]
    d = math.floor((step / sc["total_curriculum_step"]) ** (1 / root) * (high - low) + low)
    d -= d % sc["difficulty_step"]
    return min(d, high)


def _config(**metric: object) -> dict:
    return {
        "train_batch_size": 8,
        "data_efficiency": {
            "enabled": True,
            "data_sampling": {
                "enabled": True,
                "curriculum_learning": {"enabled": True, "data_cluster_path": "/tmp/clusters", "curriculum_metrics": {"seqlen": metric}},
            },
        },
    }


PERCENTILE_CASES = {
    "fixed_linear": {"schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 50, "difficulty_step": 1}},
    "fixed_root": {"schedule_type": "fixed_root", "schedule_config": {"total_curriculum_step": 80, "difficulty_step": 5, "root_degree": 2}},
    "fixed_discrete": {"schedule_type": "fixed_discrete", "schedule_config": {"difficulty": [10, 40, 100], "max_step": [7, 30]}},
}


@pytest.mark.parametrize("schedule", sorted(PERCENTILE_CASES))
def test_percentile_schedules_admit_what_deepspeed_would(schedule: str) -> None:
    cfg = {
        "index_to_sample_path": "a",
        "index_to_metric_path": "b",
        "difficulty_type": "percentile",
        "clustering_type": "schedule_based",
        "min_difficulty": 5,
        "max_difficulty": 100,
        **PERCENTILE_CASES[schedule],
    }
    definition = from_deepspeed(_config(**cfg))["seqlen"]
    assert definition.direction == "easy_to_hard" and definition.metric == "seqlen"
    assert isinstance(definition.pacing, DiscretePacing)
    steps = np.arange(200)
    expected = np.array([deepspeed_difficulty(cfg, int(t) + 1) for t in steps]) / 100  # DeepSpeed's first batch is step 1
    np.testing.assert_allclose(definition.pacing.competence(steps), expected)
    assert definition.imported_from == {"deepspeed": {"seqlen": cfg}}
    assert OrderingDefinition.from_json(definition.to_json()) == definition


def test_rounding_to_difficulty_step_reaches_a_cap_that_is_not_a_multiple() -> None:
    cfg = {
        "difficulty_type": "value",
        "min_difficulty": 8,
        "max_difficulty": 100,
        "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": 40, "difficulty_step": 8, "root_degree": 3},
    }
    definition = from_deepspeed({"curriculum_metrics": {"seqlen": cfg}})["seqlen"]
    thresholds, steps = definition.value_schedule
    pacing = DiscretePacing([t / 100 for t in thresholds], steps)
    t = np.arange(400)
    np.testing.assert_allclose(pacing.competence(t) * 100, [deepspeed_difficulty(cfg, int(s) + 1) for s in t])
    assert thresholds[-1] == 100 and steps[-1] > 40


def test_value_schedule_admits_samples_by_metric_value(store: Store) -> None:
    rng = np.random.default_rng(1)
    n = 200
    lengths = rng.integers(1, 40, n)
    store.append(
        "exemplars",
        {
            "buffer": ["b"] * n,
            "sample_id": np.arange(n),
            "class_id": np.zeros(n, dtype=np.int64),
            "task_id": np.zeros(n, dtype=np.int64),
            "tokens": [[1] * k for k in lengths],
            "rank": np.ones(n, dtype=np.int32),
            "nbytes": np.ones(n, dtype=np.int64),
        },
    )
    score(store, "exemplars", "seqlen", SequenceLength("tokens"))
    cfg = {
        "difficulty_type": "value",
        "min_difficulty": 6,
        "max_difficulty": 39,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 30, "difficulty_step": 3},
    }
    build_ordering(store, "ds", "exemplars", from_deepspeed(_config(**cfg))["seqlen"])
    _, sampler = curriculum_sampler(store, "ds")
    for step in range(40):
        admitted = sampler.admitted(step)
        assert np.array_equal(admitted, np.flatnonzero(lengths <= deepspeed_difficulty(cfg, step + 1))), step
        assert np.all(lengths[sampler.indices(step, 16)] <= deepspeed_difficulty(cfg, step + 1))


def test_config_loads_from_a_json_file(tmp_path) -> None:
    cfg = {"difficulty_type": "percentile", "min_difficulty": 1, "max_difficulty": 100, **PERCENTILE_CASES["fixed_discrete"]}
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(_config(**cfg)))
    assert from_deepspeed(path)["seqlen"] == from_deepspeed(str(path))["seqlen"] == from_deepspeed(path.read_text())["seqlen"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"schedule_type": "custom"}, "curriculum_metrics.seqlen.schedule_type"),
        ({"difficulty_type": "rank"}, "curriculum_metrics.seqlen.difficulty_type"),
        ({"schedule_config": {"difficulty": [10, 40], "max_step": [7, 30]}}, "difficulties"),
        ({"schedule_config": {"difficulty": [10, 40, 100]}}, "curriculum_metrics.seqlen.schedule_config"),
        ({"schedule_config": {"difficulty": [40, 10, 100], "max_step": [7, 30]}}, "difficulties"),
        ({"schedule_config": {"difficulty": [10, 40, 100], "max_step": [30, 7]}}, "steps"),
        ({"schedule_config": {"difficulty": [10, 40, 200], "max_step": [7, 30]}}, "difficulties"),
    ],
)
def test_bad_deepspeed_configs_are_refused_with_the_field(change: dict, field: str) -> None:
    cfg = {"difficulty_type": "percentile", "min_difficulty": 1, "max_difficulty": 100, **PERCENTILE_CASES["fixed_discrete"], **change}
    with pytest.raises(ValidationError) as err:
        from_deepspeed(_config(**cfg))
    assert err.value.field == field


@pytest.mark.parametrize(
    "schedule_config, field",
    [
        ({"total_curriculum_step": 0, "difficulty_step": 1, "root_degree": 2}, "total_curriculum_step"),
        ({"total_curriculum_step": 10, "difficulty_step": 0, "root_degree": 2}, "difficulty_step"),
        ({"total_curriculum_step": 10, "difficulty_step": 1, "root_degree": "two"}, "root_degree"),
    ],
)
def test_bad_root_schedules_are_refused(schedule_config: dict, field: str) -> None:
    cfg = {"difficulty_type": "value", "min_difficulty": 8, "max_difficulty": 64, "schedule_type": "fixed_root", "schedule_config": schedule_config}
    with pytest.raises(ValidationError) as err:
        from_deepspeed({"seqlen": cfg})
    assert err.value.field.endswith(field)


def test_disabled_or_empty_curricula_are_refused() -> None:
    config = _config(difficulty_type="percentile")
    config["data_efficiency"]["data_sampling"]["curriculum_learning"]["enabled"] = False
    with pytest.raises(ValidationError, match="enabled"):
        from_deepspeed(config)
    with pytest.raises(ValidationError, match="curriculum_metrics"):
        from_deepspeed({"data_efficiency": {"data_sampling": {"curriculum_learning": {"curriculum_metrics": {}}}}})
