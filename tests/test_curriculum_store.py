"""Scores and orderings in a real on-disk store: exact percentiles, real torch models, atomic replaces."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from replaystore import Store
from replaystore.curriculum import (
    LinearPacing,
    ModelLoss,
    OrderingDefinition,
    SequenceLength,
    SqrtPacing,
    aligned_difficulty,
    build_ordering,
    compare_orderings,
    curriculum_sampler,
    kendall_tau,
    list_orderings,
    load_ordering,
    load_scores,
    percentiles,
    score,
    top_k_overlap,
)
from replaystore.errors import ValidationError

N = 240


@pytest.fixture
def digits(store: Store) -> Store:
    """240 digits as exemplar rows, with a token list of varying length per row."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, N)
    store.append(
        "exemplars",
        {
            "buffer": ["digits"] * N,
            "sample_id": np.arange(1000, 1000 + N),
            "class_id": y[:N],
            "task_id": np.zeros(N, dtype=np.int64),
            "features": (x[:N] / 16).astype(np.float32).tolist(),
            "tokens": [rng.integers(0, 50, k).tolist() for k in lengths],
            "rank": np.ones(N, dtype=np.int32),
            "nbytes": np.full(N, 64),
        },
    )
    return store


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6)), min_size=1, max_size=200))
def test_percentiles_are_exact_against_numpy(values: list[float]) -> None:
    v = np.asarray(values, dtype=np.float64)
    expected = (v[None, :] <= v[:, None]).mean(axis=1)  # fraction of all values ≤ each one
    np.testing.assert_array_equal(percentiles(v), expected)


def test_percentiles_refuse_non_finite_values() -> None:
    with pytest.raises(ValidationError, match="finite"):
        percentiles([1.0, float("nan")])


def test_sequence_length_scores_and_percentiles_are_stored(digits: Store) -> None:
    score(digits, "exemplars", "seq_len", SequenceLength("tokens"), batch_size=50)
    stored = digits.read("curriculum_scores").sort_by("sample_id")
    tokens = digits.read("exemplars", columns=["sample_id", "tokens"]).sort_by("sample_id")
    lengths = np.array([len(t) for t in tokens.column("tokens").to_pylist()], dtype=np.float64)
    assert stored.column("sample_id").to_pylist() == [str(i) for i in tokens.column("sample_id").to_pylist()]
    np.testing.assert_array_equal(stored.column("value").to_numpy(), lengths)
    np.testing.assert_array_equal(stored.column("percentile").to_numpy(), percentiles(lengths))
    assert set(stored.column("metric").to_pylist()) == {"seq_len"}
    assert stored.column("scorer")[0].as_py() == "sequence length of 'tokens'"


def test_model_loss_is_the_per_sample_loss_of_the_model(digits: Store) -> None:
    model = _mlp()
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    score(digits, "exemplars", "loss", ModelLoss(model, loss), batch_size=64)
    scores = load_scores(digits, "exemplars", "loss")
    rows = digits.read("exemplars", columns=["sample_id", "features", "class_id"])
    with torch.no_grad():
        expected = loss(model(torch.tensor(rows.column("features").to_pylist())), torch.tensor(rows.column("class_id").to_pylist()))
    by_id = dict(zip(scores.sample_ids, scores.values))
    got = np.array([by_id[str(i)] for i in rows.column("sample_id").to_pylist()])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


@pytest.mark.slow  # importing transformers dominates (about 10 s here)
def test_model_loss_works_with_a_causal_lm_through_collate(digits: Store) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64))

    def collate(batch: pa.RecordBatch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch.column("tokens").to_pylist()
        width = max(len(t) for t in tokens)
        ids = torch.zeros(len(tokens), width, dtype=torch.long)
        mask = torch.zeros(len(tokens), width)
        for i, t in enumerate(tokens):  # test-side padding; the library never loops per row
            ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        return ids, mask

    def lm_loss(out, mask: torch.Tensor) -> torch.Tensor:
        ids = out.ids
        ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        weights = mask[:, 1:]
        return (ce * weights).sum(1) / weights.sum(1).clamp(min=1)

    class WithIds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: torch.Tensor):
            out = self.lm(input_ids=ids)
            out.ids = ids
            return out

    score(digits, "exemplars", "lm_loss", ModelLoss(WithIds(), lm_loss, collate=collate, name="tiny gpt2"), columns=["tokens"])
    scores = load_scores(digits, "exemplars", "lm_loss")
    assert len(scores.values) == N and np.all(np.isfinite(scores.values)) and scores.values.std() > 0


def test_model_loss_refuses_a_reduced_loss_and_writes_nothing(digits: Store) -> None:
    with pytest.raises(ValidationError) as err:
        score(digits, "exemplars", "loss", ModelLoss(_mlp(), torch.nn.CrossEntropyLoss()))
    assert err.value.field == "loss_fn" and "reduction='none'" in err.value.rule
    assert not digits.exists("curriculum_scores")


def test_user_function_over_arrow_batches_and_rescoring_replaces(digits: Store) -> None:
    def brightness(batch: pa.RecordBatch) -> np.ndarray:
        return batch.column("features").flatten().to_numpy().reshape(batch.num_rows, -1).sum(axis=1)

    score(digits, "exemplars", "seq_len", SequenceLength("tokens"))
    v1 = score(digits, "exemplars", "brightness", brightness, columns=["features"])
    v2 = score(digits, "exemplars", "brightness", lambda b: -brightness(b), columns=["features"], description="dimness")
    assert v2 > v1 and digits.count("curriculum_scores") == 2 * N
    now = load_scores(digits, "exemplars", "brightness")
    before = digits.read("curriculum_scores", version=v1, filter="metric = 'brightness'")
    np.testing.assert_allclose(np.sort(now.values), np.sort(-before.column("value").to_numpy()))
    assert digits.read("curriculum_scores", filter="metric = 'brightness'").column("scorer")[0].as_py() == "dimness"


@pytest.mark.parametrize(
    "scorer, field",
    [
        (lambda b: np.ones(b.num_rows - 1), "scorer"),
        (lambda b: np.full(b.num_rows, np.nan), "value"),
    ],
)
def test_bad_scorer_output_is_refused_and_store_unchanged(digits: Store, scorer, field) -> None:
    score(digits, "exemplars", "seq_len", SequenceLength("tokens"))
    version = digits.dataset("curriculum_scores").version
    with pytest.raises(ValidationError) as err:
        score(digits, "exemplars", "seq_len", scorer)
    assert err.value.field == field
    assert digits.dataset("curriculum_scores").version == version


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"metric": "bad metric"}, "metric"),
        ({"id_column": "nope"}, "id_column"),
        ({"filter": "class_id > 99"}, "source"),
        ({"batch_size": 0}, "batch_size"),
        ({"columns": ["pixels"]}, "pixels"),
    ],
)
def test_bad_score_calls_name_the_field(digits: Store, kwargs, field) -> None:
    args = {"metric": "seq_len", **kwargs}
    with pytest.raises(ValidationError) as err:
        score(digits, "exemplars", scorer=SequenceLength("tokens"), **args)
    assert not digits.exists("curriculum_scores")
    assert err.value.field == field


def test_orderings_follow_the_metric_both_ways_and_compare(digits: Store) -> None:
    score(digits, "exemplars", "loss", ModelLoss(_mlp(), torch.nn.CrossEntropyLoss(reduction="none")))
    pacing = SqrtPacing(0.1, 100)
    build_ordering(digits, "easy", "exemplars", OrderingDefinition("easy_to_hard", "loss", pacing, seed=5))
    build_ordering(digits, "hard", "exemplars", OrderingDefinition("hard_to_easy", "loss", pacing))
    scores = load_scores(digits, "exemplars", "loss")
    by_id = dict(zip(scores.sample_ids, scores.values))
    easy, hard = load_ordering(digits, "easy"), load_ordering(digits, "hard")
    easy_values = np.array([by_id[i] for i in easy.sample_ids])
    assert np.all(np.diff(easy_values) >= 0) and np.all(np.diff(easy.difficulty) >= 0)
    assert list(hard.sample_ids) == list(easy.sample_ids[::-1])  # losses are distinct
    assert easy.difficulty[-1] == 1.0 and hard.difficulty[-1] == 1.0
    assert easy.definition == OrderingDefinition("easy_to_hard", "loss", pacing, seed=5)
    assert kendall_tau(easy, hard) == pytest.approx(-1.0) and kendall_tau(easy, easy) == pytest.approx(1.0)
    result = compare_orderings(digits, "easy", "hard", k=10)
    assert result["top_k_overlap"] == 0.0 and result["shared"] == N
    assert [r["ordering"] for r in list_orderings(digits)] == ["easy", "hard"]


def test_random_orderings_are_seeded(digits: Store) -> None:
    for name, seed in [("r1", 1), ("r1b", 1), ("r2", 2)]:
        build_ordering(digits, name, "exemplars", OrderingDefinition("random", seed=seed))
    r1, r1b, r2 = (load_ordering(digits, n).sample_ids for n in ("r1", "r1b", "r2"))
    assert list(r1) == list(r1b) and list(r1) != list(r2)
    assert sorted(r1) == sorted(str(i) for i in range(1000, 1000 + N))
    assert abs(kendall_tau(r1, r2)) < 0.2


def test_user_list_ordering_and_alignment_to_source_rows(digits: Store) -> None:
    build_ordering(digits, "mine", "exemplars", OrderingDefinition("list"), ids=[1005, 1002, 1007])
    ordering = load_ordering(digits, "mine")
    assert list(ordering.sample_ids) == ["1005", "1002", "1007"]
    np.testing.assert_allclose(ordering.difficulty, [1 / 3, 2 / 3, 1])
    ids, difficulty = aligned_difficulty(digits, "mine")
    assert list(ids) == [str(i) for i in digits.read("exemplars", columns=["sample_id"]).column("sample_id").to_pylist()]
    covered = {i: d for i, d in zip(ids, difficulty) if not np.isnan(d)}
    assert covered == {"1005": pytest.approx(1 / 3), "1002": pytest.approx(2 / 3), "1007": 1.0}


def test_curriculum_sampler_draws_admitted_source_rows(digits: Store) -> None:
    score(digits, "exemplars", "seq_len", SequenceLength("tokens"))
    build_ordering(digits, "short-first", "exemplars", OrderingDefinition("easy_to_hard", "seq_len", LinearPacing(0.25, 10), seed=3))
    ids, sampler = curriculum_sampler(digits, "short-first")
    lengths = np.array([len(t) for t in digits.read("exemplars", columns=["tokens"]).column("tokens").to_pylist()])
    rows = sampler.indices(0, 32)
    assert sampler.seed == 3
    assert lengths[rows].max() <= np.quantile(lengths, 0.25, method="inverted_cdf")
    assert set(ids[rows]) <= set(ids)


def test_rebuilding_an_ordering_replaces_it_in_one_version(digits: Store) -> None:
    v1 = build_ordering(digits, "r", "exemplars", OrderingDefinition("random", seed=1))
    build_ordering(digits, "other", "exemplars", OrderingDefinition("list"), ids=[1000])
    v3 = build_ordering(digits, "r", "exemplars", OrderingDefinition("list"), ids=[1001, 1000])
    assert v3 == v1 + 2
    assert list(load_ordering(digits, "r").sample_ids) == ["1001", "1000"]
    assert len(load_ordering(digits, "r", version=v1).sample_ids) == N
    assert list(load_ordering(digits, "other").sample_ids) == ["1000"]


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: OrderingDefinition("sideways", "loss"), "direction"),
        (lambda: OrderingDefinition("easy_to_hard"), "metric"),
        (lambda: OrderingDefinition("random", metric="loss"), "metric"),
        (lambda: OrderingDefinition("easy_to_hard", "loss", seed=-1), "seed"),
        (lambda: OrderingDefinition("easy_to_hard", "loss", pacing={"type": "linear"}), "pacing"),
        (lambda: OrderingDefinition("easy_to_hard", "loss", difficulty_type="rank"), "difficulty_type"),
        (lambda: OrderingDefinition("easy_to_hard", "loss", difficulty_type="value", value_schedule=((1, 2), (5, 6))), "value_schedule"),
        (lambda: OrderingDefinition.from_dict({"direction": "random", "colour": "red"}), "colour"),
        (lambda: OrderingDefinition.from_dict({"direction": "random", "pacing": {"type": "linear", "c0": 0, "T": 5}}), "c0"),
        (lambda: OrderingDefinition.from_json("{not json"), "definition"),
    ],
)
def test_bad_definitions_are_refused(make, field) -> None:
    with pytest.raises(ValidationError) as err:
        make()
    assert err.value.field == field


@pytest.mark.parametrize(
    "name, definition, ids, field",
    [
        ("o", OrderingDefinition("easy_to_hard", "difficulty"), None, "metric"),
        ("o", OrderingDefinition("list"), [1000, 99], "ids"),
        ("o", OrderingDefinition("list"), [1000, 1000], "ids"),
        ("o", OrderingDefinition("list"), [], "ids"),
        ("o", OrderingDefinition("random"), [1000], "ids"),
        ("../o", OrderingDefinition("random"), None, "ordering"),
    ],
)
def test_bad_orderings_are_refused_and_store_unchanged(digits: Store, name, definition, ids, field) -> None:
    score(digits, "exemplars", "seq_len", SequenceLength("tokens"))
    build_ordering(digits, "kept", "exemplars", OrderingDefinition("random"))
    version = digits.dataset("curriculum_orderings").version
    with pytest.raises(ValidationError) as err:
        build_ordering(digits, name, "exemplars", definition, ids=ids)
    assert err.value.field == field
    if field == "metric":
        assert "unknown metric 'difficulty'" in err.value.rule and "seq_len" in err.value.rule
    assert digits.dataset("curriculum_orderings").version == version


def test_comparisons_validate_their_inputs() -> None:
    with pytest.raises(ValidationError, match="k"):
        top_k_overlap(["a", "b"], ["b", "a"], 3)
    with pytest.raises(ValidationError, match="shared samples"):
        kendall_tau(["a", "b"], ["c", "d"])
    assert top_k_overlap(["a", "b", "c"], ["b", "a", "d"], 2) == 1.0


def test_model_loss_leaves_the_model_in_its_training_mode(digits: Store) -> None:
    model = _mlp().train()
    score(digits, "exemplars", "loss", ModelLoss(model, torch.nn.CrossEntropyLoss(reduction="none")))
    assert model.training


def test_a_sampler_per_task_from_filtered_scores(digits: Store) -> None:
    loss = ModelLoss(_mlp(), torch.nn.CrossEntropyLoss(reduction="none"))
    for task, classes in enumerate([(0, 1), (2, 3)]):
        where = f"class_id IN {classes}"
        score(digits, "exemplars", f"loss.task{task}", loss, filter=where)
        build_ordering(digits, f"task{task}", "exemplars", OrderingDefinition("easy_to_hard", f"loss.task{task}", LinearPacing(0.5, 4)))
        ids, sampler = curriculum_sampler(digits, f"task{task}", filter=where)
        classes_seen = digits.read("exemplars", columns=["class_id"], filter=where).column("class_id").to_numpy()
        assert len(sampler) == len(ids) == len(classes_seen)
        assert set(classes_seen[sampler.indices(0, 50)]) <= set(classes)
    assert digits.count("curriculum_scores", filter="metric = 'loss.task0'") == int(np.isin(load_digits().target[:N], (0, 1)).sum())
