"""DeepSpeed's own scheduler, configs and unit-test expectations against `from_deepspeed`.

Fixtures (tests/fixtures/deepspeed, sources and licences in its README): DeepSpeed's
`curriculum_scheduler.py` executed as published, the tutorial's legacy config, the configs and
ground truths of DeepSpeed's unit tests, and Megatron-DeepSpeed's data-efficiency config templates
rendered with the values of its run scripts, plus Megatron's `data_post_process` executed as published.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from replaystore import Store
from replaystore.curriculum import (
    OrderingDefinition,
    SeqlenCurriculum,
    SequenceLength,
    build_ordering,
    curriculum_sampler,
    from_deepspeed,
    score,
)
from replaystore.errors import ValidationError
from replaystore.stream import ReplayStream, Source

FIXTURES = Path(__file__).parent / "fixtures" / "deepspeed"


def deepspeed_scheduler_class() -> type:
    """DeepSpeed's CurriculumScheduler, executed from its published source (its two imports bound here)."""
    scope: dict[str, Any] = {}
    exec((FIXTURES / "constants_excerpt.py.txt").read_text(), scope)
    source = (FIXTURES / "curriculum_scheduler.py.txt").read_text()
    imports = "from deepspeed.utils import logger\nfrom .constants import *\n"
    assert imports in source
    scope.update(logger=logging.getLogger("deepspeed"), __name__="deepspeed_scheduler")
    exec(source.replace(imports, ""), scope)
    return scope["CurriculumScheduler"]


CurriculumScheduler = deepspeed_scheduler_class()


def megatron_config(run: str) -> dict:
    """A Megatron-DeepSpeed template rendered like its run script's sed (first match per line)."""
    runs = json.loads((FIXTURES / "megatron_runs.json").read_text())
    values = runs["runs"][run]
    lines = (FIXTURES / values["template"]).read_text().splitlines()
    for placeholder, value in {**runs["common"][values["model"]], **values}.items():
        lines = [line.replace(placeholder, value, 1) for line in lines]
    return json.loads("\n".join(lines))


def deepspeed_difficulties(metric_cfg: dict, steps: np.ndarray) -> list[float]:
    """What DeepSpeed's sampler gets from the scheduler at each of its steps (called in increasing order)."""
    scheduler = CurriculumScheduler(metric_cfg)
    return [scheduler.update_difficulty(int(s)) for s in steps]


def ours(imported: OrderingDefinition | SeqlenCurriculum, metric_cfg: dict, steps: np.ndarray) -> list[float]:
    """replaystore's difficulty at its steps, in DeepSpeed's units."""
    if isinstance(imported, SeqlenCurriculum):
        return [imported.difficulty(int(t)) for t in steps]
    if imported.difficulty_type == "value":
        thresholds, change = imported.value_schedule
        return [thresholds[int(np.searchsorted(change, t, side="left"))] for t in steps]
    return list(imported.pacing.competence(steps) * metric_cfg["max_difficulty"])


def check_steps(total: int) -> np.ndarray:
    """Every step of the start, a spread over the whole schedule, and the tail past its end."""
    spread = np.unique(np.geomspace(1, 3 * total, 400).astype(np.int64))
    return np.unique(np.concatenate([np.arange(1, 300), spread, np.arange(total - 5, total + 40)]))


def assert_same_schedule(imported: Any, metric_cfg: dict) -> None:
    sc = metric_cfg["schedule_config"]
    total = sc.get("total_curriculum_step", max(sc.get("max_step", [1])) + 5)
    ds_steps = check_steps(total)
    expected = deepspeed_difficulties(metric_cfg, ds_steps)
    np.testing.assert_allclose(ours(imported, metric_cfg, ds_steps - 1), expected, rtol=0, atol=1e-9)


MEGATRON_RUNS = sorted(json.loads((FIXTURES / "megatron_runs.json").read_text())["runs"])


@pytest.mark.parametrize("run", MEGATRON_RUNS)
def test_megatron_data_efficiency_configs_import_with_deepspeeds_schedule(run: str) -> None:
    config = megatron_config(run)
    metrics = config["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    imported = from_deepspeed(config)
    assert set(imported) == set(metrics)
    for name, cfg in metrics.items():
        result = imported[name]
        if cfg["clustering_type"] == "single_cluster":  # every row admitted; only the token columns change
            assert isinstance(result, SeqlenCurriculum)
            assert result.mode == {"seqlen_truncate": "truncate", "seqlen_reshape": "reshape"}.get(name, "none")
        else:
            assert isinstance(result, OrderingDefinition) and result.metric == name
        assert_same_schedule(result, cfg)


@pytest.mark.parametrize(
    "schedule_config",
    [
        {"total_curriculum_step": 1000, "difficulty_step": 8, "root_degree": 2},
        {"total_curriculum_step": 37, "difficulty_step": 3, "root_degree": 3},
        {"total_curriculum_step": 5000, "difficulty_step": 1, "root_degree": 1},
    ],
)
@pytest.mark.parametrize("kind", ["value", "percentile"])
def test_fixed_root_and_linear_follow_deepspeeds_formula_at_every_checked_step(schedule_config: dict, kind: str) -> None:
    low, high = (5, 100) if kind == "percentile" else (64, 1000)
    cfg = {
        "difficulty_type": kind,
        "clustering_type": "schedule_based",
        "min_difficulty": low,
        "max_difficulty": high,
        "schedule_type": "fixed_root",
        "schedule_config": schedule_config,
    }
    assert_same_schedule(from_deepspeed({"curriculum_metrics": {"m": cfg}})["m"], cfg)
    linear = {**cfg, "schedule_type": "fixed_linear", "schedule_config": {k: v for k, v in schedule_config.items() if k != "root_degree"}}
    assert_same_schedule(from_deepspeed({"curriculum_metrics": {"m": linear}})["m"], linear)


def test_fixed_discrete_follows_deepspeed_including_a_first_max_step_of_zero() -> None:
    cfg = {
        "difficulty_type": "percentile",
        "min_difficulty": 10,
        "max_difficulty": 50,
        "schedule_type": "fixed_discrete",
        "schedule_config": {"difficulty": [10, 20, 30, 50], "max_step": [0, 4, 9]},
    }
    assert_same_schedule(from_deepspeed({"curriculum_metrics": {"m": cfg}})["m"], cfg)


@pytest.mark.parametrize("test", ["test_fixed_discrete", "test_fixed_linear"])
def test_deepspeed_unit_test_ground_truths_hold_for_the_legacy_section(test: str) -> None:
    """DeepSpeed's own expectations: its n-th batch (1-based) sees ground_truths[n]; ours is batch n − 1."""
    case = json.loads((FIXTURES / "deepspeed_unit_tests.json").read_text())[test]
    schedule = from_deepspeed(case["config"])["seqlen"]
    assert isinstance(schedule, SeqlenCurriculum) and schedule.mode == "truncate"
    truths = {int(n): v for n, v in case["ground_truths"].items()}
    for batch in range(20):
        assert schedule.difficulty(batch) == truths.get(batch + 1, case["after"]), batch


def test_deepspeed_unit_test_data_efficiency_config_admits_every_row() -> None:
    case = json.loads((FIXTURES / "deepspeed_unit_tests.json").read_text())["test_curriculum_learning"]
    imported = from_deepspeed(case["config"])
    metric = case["config"]["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["dummy_metric"]
    assert isinstance(imported["dummy_metric"], SeqlenCurriculum) and imported["dummy_metric"].mode == "none"
    assert_same_schedule(imported["dummy_metric"], metric)
    batch = {"input_ids": np.arange(24).reshape(2, 12)}
    assert imported["dummy_metric"](batch, 0)["input_ids"] is batch["input_ids"]


def test_the_tutorials_legacy_config_imports_as_truncation() -> None:
    config = json.loads((FIXTURES / "tutorial_curriculum_learning.json").read_text())
    schedule = from_deepspeed(config)["seqlen"]
    assert isinstance(schedule, SeqlenCurriculum) and schedule.mode == "truncate"
    assert_same_schedule(schedule, config["curriculum_learning"])
    assert schedule.difficulty(0) == 8 and schedule.difficulty(15_000) == 1024
    batch = {"input_ids": torch.arange(2 * 1024).view(2, 1024), "labels": torch.arange(2 * 1024).view(2, 1024)}
    cut = schedule(batch, 7_500)
    width = schedule.difficulty(7_500)
    assert cut["input_ids"].shape == (2, width) and torch.equal(cut["labels"], batch["labels"][:, : int(width)])
    config["curriculum_learning"]["enabled"] = False
    with pytest.raises(ValidationError, match=r"curriculum_learning\.enabled"):
        from_deepspeed(config)


@pytest.mark.parametrize("seqlen", [7, 16, 33, 63, 64, 100])
@pytest.mark.parametrize("metric", ["seqlen_truncate", "seqlen_reshape"])
def test_truncate_and_reshape_equal_megatrons_data_post_process(metric: str, seqlen: int) -> None:
    """Megatron's `text` carries seq_length + 1 tokens; `extra_tokens=1` keeps that layout."""
    seq_length, rows = 64, 6
    args = SimpleNamespace(data_efficiency_curriculum_learning=True, seq_length=seq_length)
    scope: dict[str, Any] = {"torch": torch, "math": math, "get_args": lambda: args}
    exec((FIXTURES / "megatron_data_post_process.py.txt").read_text(), scope)
    text = torch.arange(rows * (seq_length + 1)).view(rows, seq_length + 1)
    expected = scope["data_post_process"]({"text": text.clone()}, {"current_difficulties": {metric: seqlen}})["text"]
    mode = "truncate" if metric == "seqlen_truncate" else "reshape"
    schedule = SeqlenCurriculum(metric, mode, (seqlen,), (), columns=("text",), extra_tokens=1)
    assert torch.equal(schedule({"text": text}, 0)["text"], expected)
    as_numpy = schedule({"text": text.numpy()}, 0)["text"]
    assert np.array_equal(as_numpy, expected.numpy())


def test_stream_batches_are_truncated_to_the_schedule_with_lengths(tmp_path: Path) -> None:
    """A single-cluster seqlen_truncate schedule over a real Lance stream: every row comes, cut to the step's length."""
    import lance

    lengths = [3 + (7 * i) % 29 for i in range(48)]
    lance.write_dataset(pa.table({"tokens": pa.array([list(range(n)) for n in lengths], pa.list_(pa.int32())), "id": np.arange(48)}), tmp_path / "tok.lance")
    cfg = {
        "difficulty_type": "value",
        "clustering_type": "single_cluster",
        "min_difficulty": 8,
        "max_difficulty": 32,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 5, "difficulty_step": 8},
    }
    schedule = from_deepspeed({"curriculum_metrics": {"seqlen_truncate": cfg}})["seqlen_truncate"]
    schedule = SeqlenCurriculum(schedule.metric, schedule.mode, schedule.difficulties, schedule.steps, columns=("tokens",))
    stream = ReplayStream(Source.from_lance("tok", str(tmp_path / "tok.lance")), 8, prefetch=0)
    seen = []
    for step, batch in enumerate(schedule.apply_to(stream)):
        width = int(schedule.difficulty(step))
        rows = [lengths[i] for i in batch["id"].tolist()]
        assert batch["tokens"].shape[1] <= width
        assert batch["tokens_lengths"].tolist() == [min(n, width) for n in rows]
        for row, n in zip(batch["tokens"].tolist(), rows, strict=True):
            assert row[: min(n, width)] == list(range(min(n, width)))
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(48))  # single cluster: every row admitted


def test_percentiles_are_fractions_of_max_difficulty_and_zero_admits_the_minimum(store: Store) -> None:
    """DeepSpeed admits (N // max) · d samples of a percentile d (data_sampler); a d rounded to 0 admits none there."""
    n = 200
    rng = np.random.default_rng(3)
    lengths = rng.permutation(np.arange(1, n + 1))  # distinct lengths: no ties
    store.append(
        "exemplars",
        {
            "buffer": ["b"] * n,
            "sample_id": np.arange(n),
            "class_id": np.zeros(n, dtype=np.int64),
            "task_id": np.zeros(n, dtype=np.int64),
            "tokens": [[1] * int(k) for k in lengths],
            "rank": np.ones(n, dtype=np.int32),
            "nbytes": np.ones(n, dtype=np.int64),
        },
    )
    score(store, "exemplars", "seqlen", SequenceLength("tokens"))
    cfg = {
        "difficulty_type": "percentile",
        "clustering_type": "schedule_based",
        "min_difficulty": 3,
        "max_difficulty": 50,
        "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": 40, "difficulty_step": 4, "root_degree": 2},
    }
    build_ordering(store, "pct", "exemplars", from_deepspeed({"curriculum_metrics": {"seqlen": cfg}})["seqlen"])
    _, sampler = curriculum_sampler(store, "pct")
    scheduler = CurriculumScheduler(cfg)
    for step in range(60):
        d = scheduler.update_difficulty(step + 1)
        deepspeed_count = n if d == cfg["max_difficulty"] else (n // cfg["max_difficulty"]) * d
        expected = max(deepspeed_count, 1)  # d = 0: DeepSpeed has nothing to draw; we admit the easiest sample
        assert sampler.admitted_count(step) == expected, (step, d)
        assert np.array_equal(np.sort(lengths[sampler.admitted(step)]), np.arange(1, expected + 1))


def test_hf_trainer_sees_the_truncated_length_at_each_optimizer_step(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from replaystore.curriculum.trainer import SeqlenCurriculumTrainer
    from replaystore.gere.offline import tiny_causal_lm

    torch.set_num_threads(1)
    model = tiny_causal_lm(50, hidden=16, layers=1, positions=64)
    data = [{"input_ids": list(range(1, 33)), "labels": list(range(1, 33)), "attention_mask": [1] * 32} for _ in range(16)]
    cfg = {
        "curriculum_learning": {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 8,
            "max_difficulty": 32,
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 3, "difficulty_step": 8},
        }
    }
    schedule = from_deepspeed(cfg)["seqlen"]
    widths: list[int] = []
    model.register_forward_pre_hook(lambda _m, _a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=4,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        save_strategy="no",
        learning_rate=1e-3,
    )
    collate = lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    SeqlenCurriculumTrainer(model=model, args=args, train_dataset=data, data_collator=collate, seqlen_curriculum=schedule).train()
    assert widths == [int(schedule.difficulty(step)) for step in range(4) for _ in range(2)]
    assert widths[:2] == [16, 16] and widths[-1] == 32  # DeepSpeed's first batch is step 1: 8 + 24 · 1/3 = 16, not min 8


def test_reshape_of_stream_columns_keeps_every_token_and_counts_real_ones() -> None:
    packed = np.arange(4 * 24).reshape(4, 24)
    out = SeqlenCurriculum("seqlen_reshape", "reshape", (8,), (), columns=("tokens",))(
        {"tokens": packed, "tokens_lengths": np.full(4, 24), "id": np.arange(4)}, 0
    )
    assert out["tokens"].shape == (12, 8) and np.array_equal(out["tokens"].reshape(-1), packed.reshape(-1))
    assert out["tokens_lengths"].tolist() == [8] * 12 and "id" not in out  # rows were re-cut: per-row ids no longer apply
    padded = SeqlenCurriculum("seqlen_reshape", "reshape", (4,), (), columns=("tokens",))(
        {"tokens": torch.zeros(2, 8), "tokens_lengths": torch.tensor([8, 5])}, 0
    )
    assert padded["tokens_lengths"].tolist() == [4, 4, 4, 1]


def test_building_an_ordering_from_a_single_cluster_metric_is_refused_with_the_fix(store: Store) -> None:
    schedule = from_deepspeed(megatron_config("gpt CL seqlen truncation 300B tokens"))["seqlen_truncate"]
    with pytest.raises(ValidationError, match=r"definition: must be an OrderingDefinition, got SeqlenCurriculum .*apply its SeqlenCurriculum"):
        build_ordering(store, "x", "exemplars", schedule)
    assert not store.exists("curriculum_orderings")
