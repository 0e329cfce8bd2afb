"""The maintenance flows under Prefect's test harness, on real stores: what they change, and what they refuse."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # binds pa.compute
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import flow
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sklearn.datasets import load_digits

import replaystore
from replaystore.errors import CommitConflictError, NotFoundError, ValidationError
from replaystore.flows.distill import distill
from replaystore.flows.index import index
from replaystore.flows.prune import prune
from replaystore.flows.retries import is_transient, store_task
from replaystore.flows.stream import stream
from replaystore.gere.offline import minilm_path, minilm_tokenizer, python_docstrings, tiny_causal_lm

pytestmark = pytest.mark.usefixtures("prefect_harness")  # tests/conftest.py: one test server per session; marks these slow


def add_priorities(store: replaystore.Store, start: int, n: int = 1, source: str = "digits") -> int:
    ids = [str(i) for i in range(start, start + n)]
    return store.append("priorities", {"source": [source] * n, "sample_id": ids, "priority": [1.0] * n})


def snapshot(store: replaystore.Store) -> dict[str, list[tuple[int, int]]]:
    return {name: [(v.version, v.rows) for v in store.versions(name)] for name in store.table_names()}


def task_run_count(flow_run_id: Any) -> int:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return len(runs)


# -- prune ---------------------------------------------------------------------------------------


def test_prune_compacts_and_removes_old_versions_but_keeps_tagged_and_pinned(store: replaystore.Store) -> None:
    for i in range(6):
        add_priorities(store, i)
    store.tag("priorities", 2, "after-task-1")
    before = {v.version: v.rows for v in store.versions("priorities")}
    with store.pin("priorities", 4) as pinned:
        summary = prune(store.uri, retention_hours=0)
        kept = {v.version: v.rows for v in store.versions("priorities")}
        assert store.count("priorities", version=pinned) == before[pinned] == 3
    assert store.read("priorities", version="after-task-1")["sample_id"].to_pylist() == ["0"]
    assert {2, 4} <= set(kept) and len(kept) < len(before)
    assert all(kept[v] == before[v] for v in kept if v in before)
    assert sorted(store.read("priorities")["sample_id"].to_pylist(), key=int) == [str(i) for i in range(6)]
    assert store.info("priorities").fragments == 1
    cleanup = summary["cleanup"][0]
    assert cleanup["table"] == "priorities" and cleanup["versions_removed"] == len(before) + max(kept) - max(before) - len(kept)
    assert cleanup["bytes_removed"] > 0
    assert summary["compaction"] == [{"table": "priorities", "fragments_before": 6, "fragments_after": 1}]
    artifact = Artifact.get("prune-summary")
    assert artifact is not None and "| priorities | 6 | 1 |" in str(artifact.data)


def test_prune_keeps_versions_inside_the_retention_period(store: replaystore.Store) -> None:
    for i in range(3):
        add_priorities(store, i)
    before = snapshot(store)
    summary = prune(store.uri, retention_hours=24, compact=False)
    assert snapshot(store) == before
    assert "compaction" not in summary and summary["cleanup"][0]["versions_removed"] == 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=st.integers(2, 6), tagged=st.sets(st.integers(1, 6), max_size=3), data=st.data())
def test_cleanup_never_deletes_a_tagged_version(tmp_path_factory: Any, appends: int, tagged: set[int], data: Any) -> None:
    store = replaystore.open(str(tmp_path_factory.mktemp("store")))
    for i in range(appends):
        add_priorities(store, i * 10, n=data.draw(st.integers(1, 4)))
    tags = {f"t{v}": v for v in tagged if v <= appends + 1}
    for tag, version in tags.items():
        store.tag("priorities", version, tag)
    expected = {tag: store.read("priorities", version=tag) for tag in tags}
    latest = store.read("priorities")
    prune(store.uri, retention_hours=0, compact=data.draw(st.booleans()))
    for tag, table in expected.items():
        assert store.read("priorities", version=tag).equals(table)
    assert store.read("priorities").sort_by("sample_id").equals(latest.sort_by("sample_id"))


def test_prune_while_writers_append_loses_nothing(store: replaystore.Store) -> None:
    add_priorities(store, 0, n=10)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(8):
                add_priorities(store, offset + i * 5, n=5)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(1000 * (k + 1),)) for k in range(2)]
    for t in threads:
        t.start()
    prune(store.uri, retention_hours=0)
    for t in threads:
        t.join()
    assert errors == []
    ids = store.read("priorities")["sample_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 10 + 2 * 8 * 5


def test_prune_cuts_exemplar_buffers_back_inside_their_budget(store: replaystore.Store) -> None:
    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target
    sample = images[0].nbytes
    buffer = store.exemplars("digits", budget=400 + 10 * sample, model_params=100, model_dtype="float32", selector="random")
    buffer.add(0, images[labels == 0][:20])
    buffer.add(1, images[labels == 1][:20])  # fixed_total: class 0 shrinks to 5
    extra = store.read("digits", filter="class_id = 0").to_pydict()
    extra.update(sample_id=[i + 1000 for i in extra["sample_id"]], rank=[r + 5 for r in extra["rank"]])
    store.append("digits", extra)  # a plain append bypasses the budget: 10 rows of class 0, the policy says 5
    assert buffer.budget()["per_class"] == {0: 10, 1: 5}
    kept_ids = buffer.samples().sample_ids[:5].tolist()
    summary = prune(store.uri, retention_hours=24)
    report = buffer.budget()
    assert report["per_class"] == {0: 5, 1: 5} and buffer.samples(classes=[0]).sample_ids.tolist() == kept_ids
    assert summary["exemplar budgets"] == [
        {
            "buffer": "digits",
            "rows_cut": 5,
            "bytes_freed": 5 * sample,
            "total_bytes": 400 + 10 * sample,
            "model_bytes": 400,
            "exemplar_bytes": 10 * sample,
            "free_bytes": 0,
            "rows": 10,
        }
    ]
    assert prune(store.uri, buffers=["digits"], retention_hours=24)["exemplar budgets"][0]["rows_cut"] == 0
    artifact = Artifact.get("prune-summary")
    assert artifact is not None and "## exemplar budgets" in str(artifact.data)


def test_prune_archives_experiences_by_the_utility_rule_and_index_builds_their_indexes(store: replaystore.Store) -> None:
    memory = store.experiences()
    texts = [
        ("a test fails with a timeout", "rerun it with a longer timeout and capture the slow step"),
        ("a CSV file has a broken header", "read it with an explicit schema and skip the first line"),
        ("the GPU runs out of memory", "halve the batch size and accumulate gradients"),
    ]
    ids = memory.add([{"when_to_use": w, "content": c} for w, c in texts], workspace="agents").added
    assert len(ids) == 3
    store.update("experiences", {"freq": "6", "utility": "1"}, where=f"experience_id = '{ids[0]}'")  # 1/6 < 0.5
    store.update("experiences", {"freq": "6", "utility": "4"}, where=f"experience_id = '{ids[1]}'")  # 4/6 kept
    summary = prune(store.uri, tables=["experiences"], retention_hours=24)
    status = dict(zip(*store.read("experiences", columns=["experience_id", "status"]).to_pydict().values()))
    assert status == {ids[0]: "archived", ids[1]: "active", ids[2]: "active"}
    assert summary["experiences"] == [{"table": "experiences", "archived": 1, "active": 2}]

    indexed = index(store.uri, tables=["experiences"])
    assert indexed["experiences"][0]["rows"] == 3 and "when_to_use" in indexed["experiences"][0]["full_text"]
    fields = {tuple(d.field_names) for d in store.dataset("experiences").describe_indices()}
    assert {("when_to_use",), ("content",), ("experience_id",)} <= fields
    hits = store.dataset("experiences").to_table(full_text_query="timeout", columns=["experience_id"])
    assert hits["experience_id"].to_pylist() == [ids[0]]


# -- distill -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen_lm(tmp_path_factory: Any) -> Path:
    """A tiny GPT-2 with MiniLM's vocabulary, saved as a local model folder (as a deployment names it)."""
    folder = tmp_path_factory.mktemp("frozen-lm")
    tiny_causal_lm(minilm_tokenizer().vocab_size, hidden=32, positions=64).save_pretrained(folder)
    return folder


def general_params(tmp_path: Path, frozen_lm: Path, n: int = 6) -> dict[str, Any]:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in python_docstrings(limit=n)))
    return {"model": str(frozen_lm), "tokenizer": str(minilm_path()), "texts": str(texts), "source": "pydoc", "max_length": 32}


def test_distill_general_samples_ingests_once_and_stores_states_and_statistics(store: replaystore.Store, tmp_path: Path, frozen_lm: Path) -> None:
    params = general_params(tmp_path, frozen_lm)
    summary = distill(store.uri, general=params)
    assert [(r["step"], r["added"], r["skipped"]) for r in summary["general samples"]] == [("ingest", 6, 0), ("states", 6, 0)]
    samples = store.read("general_samples")
    assert samples.num_rows == 6 and set(samples["source"].to_pylist()) == {"pydoc"}
    states = store.read("activation_states", columns=["sample_id", "token_count"])
    assert sorted(states["sample_id"].to_pylist()) == sorted(samples["sample_id"].to_pylist())
    stats = store.read("activation_stats")
    assert stats["count"].to_pylist() == [sum(samples["token_count"].to_pylist())]
    versions = {t: store.dataset(t).version for t in ("general_samples", "activation_states", "activation_stats")}
    again = distill(store.uri, general=params)  # resumable: nothing new to ingest or forward
    assert [(r["added"], r["skipped"]) for r in again["general samples"]] == [(0, 6), (0, 6)]
    assert {t: store.dataset(t).version for t in versions} == versions
    artifact = Artifact.get("distill-summary")
    assert artifact is not None and "## general samples" in str(artifact.data)


def test_distill_and_prune_running_together_lose_nothing(store: replaystore.Store, tmp_path: Path, frozen_lm: Path) -> None:
    add_priorities(store, 0, n=3)
    results: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: results.update(distill(store.uri, general=general_params(tmp_path, frozen_lm, 10))))
    worker.start()
    for _ in range(3):
        prune(store.uri, retention_hours=0)
    worker.join()
    assert results["general samples"][1]["added"] == 10
    samples = store.read("general_samples", columns=["sample_id", "token_count"])
    states = store.read("activation_states", columns=["sample_id"])["sample_id"].to_pylist()
    assert samples.num_rows == 10 and len(states) == len(set(states)) == 10
    assert store.read("activation_stats")["count"].to_pylist() == [sum(samples["token_count"].to_pylist())]
    assert store.count("priorities") == 3


TRAJECTORIES = [
    {
        "task_id": "csv",
        "score": 1.0,
        "messages": [
            {"role": "user", "content": "Load the sales CSV whose header row is broken"},
            {"role": "assistant", "content": "Read the file with an explicit column list and skip the first line"},
            {"role": "tool", "name": "read_csv", "content": "1200 rows, 6 columns"},
            {"role": "assistant", "content": "Check the row count against the source system before continuing"},
        ],
    },
    {
        "task_id": "csv",
        "score": 0.0,
        "messages": [
            {"role": "user", "content": "Load the sales CSV whose header row is broken"},
            {"role": "assistant", "content": "Read the file with default settings and trust the inferred header"},
        ],
    },
]


def test_a_flow_failing_part_way_leaves_every_table_at_a_whole_version(store: replaystore.Store, tmp_path: Path, frozen_lm: Path) -> None:
    buffer = store.exemplars("digits", budget=10_000, model_params=10, model_dtype="float32", selector="random")
    store.create_table("task_samples")  # no rows of task 7: the exemplars branch fails after general ran
    versions = [v.version for v in store.versions("digits")]
    params = {"buffer": "digits", "task_id": 7, "model": str(frozen_lm / "config.json")}
    state = distill(store.uri, general=general_params(tmp_path, frozen_lm, 4), exemplars=params, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationError) as err:
        state.result()
    assert err.value.field == "exemplars.task_id"
    samples = store.read("general_samples", columns=["sample_id", "token_count"])  # the branch that ran is complete
    assert samples.num_rows == 4 and store.count("activation_states") == 4
    assert store.read("activation_stats")["count"].to_pylist() == [sum(samples["token_count"].to_pylist())]
    assert buffer.budget()["rows"] == 0 and [v.version for v in store.versions("digits")] == versions


def test_broken_trajectories_are_refused_before_any_work(store: replaystore.Store, tmp_path: Path, frozen_lm: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(TRAJECTORIES[0]) + "\n{not json\n")
    state = distill(store.uri, general=general_params(tmp_path, frozen_lm, 4), experiences={"path": str(broken)}, return_state=True)
    with pytest.raises(ValidationError) as err:
        state.result()
    assert err.value.field == "experiences.path" and "broken.jsonl:2" in err.value.rule
    assert task_run_count(state.state_details.flow_run_id) == 0 and store.table_names() == []


def test_distill_experiences_from_trajectories_skips_duplicates(store: replaystore.Store, tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TRAJECTORIES))
    params = {"path": str(path), "workspace": "travel", "dedup_threshold": 0.95}
    summary = distill(store.uri, experiences=params)["experiences"][0]
    assert summary["candidates"] == 3 and summary["added"] == 3 and summary["rejected"] == 0
    rows = store.read("experiences", columns=["kind", "workspace", "status"]).to_pylist()
    assert sorted(r["kind"] for r in rows) == ["comparative", "failure", "success"]
    assert {(r["workspace"], r["status"]) for r in rows} == {("travel", "active")}
    again = distill(store.uri, experiences=params)["experiences"][0]
    assert again["added"] == 0 and again["duplicates"] == 3 and store.count("experiences") == 3


def test_distill_offers_exemplar_candidates_with_features(store: replaystore.Store, tmp_path: Path) -> None:
    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target
    task = np.isin(labels, [0, 1])
    store.append(
        "task_samples",
        {
            "sample_id": np.flatnonzero(task),
            "task_id": np.zeros(task.sum(), dtype=np.int64),
            "class_id": labels[task],
            "data": [x.tobytes() for x in images[task]],
            "shape": [[8, 8]] * int(task.sum()),
            "dtype": ["uint8"] * int(task.sum()),
        },
    )
    torch.manual_seed(0)
    extractor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU())
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(extractor, (torch.zeros(2, 8, 8),), dynamic_shapes=({0: batch},)), tmp_path / "features.pt2")
    sample = images[0].nbytes
    buffer = store.exemplars("digits", budget=400 + 20 * sample, model_params=100, model_dtype="float32", selector="herding")
    params = {"buffer": "digits", "task_id": 0, "model": str(tmp_path / "features.pt2")}
    summary = distill(store.uri, exemplars=params)["exemplars"]
    assert [(r["class_id"], r["offered"]) for r in summary] == [(0, int((labels == 0).sum())), (1, int((labels == 1).sum()))]
    report = buffer.budget()
    assert report["per_class"] == {0: 10, 1: 10} and report["free_bytes"] == 0
    kept = buffer.samples()
    assert kept.features is not None and kept.features.shape == (20, 16)
    with torch.inference_mode():
        expected = extractor(torch.from_numpy(kept.data).float()).numpy()
    np.testing.assert_allclose(kept.features, expected, rtol=1e-5, atol=1e-6)
    assert set(kept.sample_ids.tolist()) <= set(np.flatnonzero(task).tolist())


# -- stream --------------------------------------------------------------------------------------


def digits_train_loop(stream: Any, log: Any, config: dict[str, Any]) -> dict[str, float]:
    """A small MLP on digits; every batch's per-sample losses go into the loss log."""
    import ray.train.torch

    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    names = [s.name for s in stream.sources]
    for _ in range(config["epochs"]):
        for batch in stream:
            losses = torch.nn.functional.cross_entropy(model(batch["data"].float() / 16), batch["class_id"], reduction="none")
            optim.zero_grad()
            (losses * batch["_weight"]).mean().backward()
            optim.step()
            log.add(names, stream.state_dict()["versions"] or [None] * len(names), batch, losses)
    return {"loss": float(losses.mean())}


@pytest.mark.slow
def test_stream_trains_on_ray_over_a_mixture_and_writes_priorities_back(store: replaystore.Store, tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target
    for table, classes in (("exemplars", [0, 1]), ("task_samples", [2, 3])):
        keep = np.isin(labels, classes)
        n = int(keep.sum())
        extra = {"buffer": ["digits"] * n, "rank": [1] * n, "nbytes": [64] * n} if table == "exemplars" else {}
        store.append(
            table,
            {
                **extra,
                "sample_id": np.flatnonzero(keep),
                "task_id": np.zeros(n, dtype=np.int64),
                "class_id": labels[keep],
                "data": [x.tobytes() for x in images[keep]],
                "shape": [[8, 8]] * n,
                "dtype": ["uint8"] * n,
            },
        )
    columns = ["data", "shape", "dtype", "class_id"]
    sources = [
        {"table": "task_samples", "columns": columns, "weight": 3.0},
        {"table": "exemplars", "columns": columns, "sampler": "prioritized", "weight": 1.0},
    ]
    result = stream(
        sources,
        f"{__name__}:digits_train_loop",
        store.uri,
        train_loop_config={"epochs": 1},
        batch_size=16,
        storage_path=str(tmp_path / "ray"),
    )
    priorities = store.read("priorities")
    assert result["priorities_version"] == store.dataset("priorities").version
    assert set(priorities["source"].to_pylist()) == {"task_samples", "exemplars"}
    assert result["priority_rows"] == priorities.num_rows > 0
    for table in ("task_samples", "exemplars"):
        mine = priorities.filter(pa.compute.equal(priorities["source"], table))["sample_id"].to_pylist()
        assert set(mine) <= {str(i) for i in store.read(table)["sample_id"].to_pylist()} and len(mine) == len(set(mine))
    assert min(priorities["priority"].to_pylist()) > 0 and np.isfinite(result["metrics"]["loss"])


# -- index ---------------------------------------------------------------------------------------


def test_index_builds_scalar_indexes_then_keeps_them_current(store: replaystore.Store) -> None:
    add_priorities(store, 0, n=50)
    store.create_table("exemplars")  # empty: nothing to index yet
    first = index(store.uri)["scalar indexes"]
    assert {(r["table"], r["column"], r["action"]) for r in first} == {
        ("priorities", "sample_id", "created"),
        ("priorities", "source", "created"),
    }
    ds = store.dataset("priorities")
    assert {tuple(d.field_names): d.type_url.rsplit(".", 1)[-1] for d in ds.describe_indices()} == {
        ("sample_id",): "BTreeIndexDetails",
        ("source",): "BitmapIndexDetails",
    }
    add_priorities(store, 50, n=5, source="text")
    assert {r["action"] for r in index(store.uri, tables=["priorities"])["scalar indexes"]} == {"updated"}
    ds = store.dataset("priorities")
    assert all(ds.stats.index_stats(d.name)["num_unindexed_rows"] == 0 for d in ds.describe_indices())
    assert store.count("priorities", filter="source = 'text'") == 5
    assert {r["action"] for r in index(store.uri)["scalar indexes"]} == {"current"}
    artifact = Artifact.get("index-summary")
    assert artifact is not None and "| priorities | sample_id | BTREE | current |" in str(artifact.data)


def test_index_migrates_an_older_table_before_indexing_it(store: replaystore.Store) -> None:
    from test_readers import exemplar_rows, outdate

    store.append("exemplars", exemplar_rows(20))
    outdate(store, "exemplars", {"tokens", "features"})
    summary = index(store.uri, tables=["exemplars"])
    assert [(m["table"], m["added"]) for m in summary["migrations"]] == [("exemplars", "tokens, features")]
    assert store.schema_gap("exemplars") is None and store.count("exemplars", filter="features IS NULL") == 20
    assert {r["action"] for r in summary["scalar indexes"]} == {"created"}
    assert "migrations" not in index(store.uri, tables=["exemplars"]), "a current table is not migrated again"


def test_index_scores_a_source_and_stores_its_orderings(store: replaystore.Store) -> None:
    lengths = [5, 1, 3, 2, 4]
    store.append(
        "general_samples",
        {
            "sample_id": [f"s{i}" for i in range(5)],
            "source": ["docstrings"] * 5,
            "text": ["x" * n for n in lengths],
            "token_ids": [list(range(n)) for n in lengths],
            "token_count": lengths,
            "content_hash": [f"h{i}" for i in range(5)],
            "tokenizer": ["chars"] * 5,
        },
    )
    spec = {"source": "general_samples", "column": "token_ids", "metric": "length", "directions": ["easy_to_hard", "random"]}
    summary = index(store.uri, curriculum=spec)
    assert [r["ordering"] for r in summary["curriculum"]] == ["(scores)", "general-samples-length-easy-to-hard", "general-samples-length-random"]
    scores = store.read("curriculum_scores").sort_by("value")
    assert scores["sample_id"].to_pylist() == ["s1", "s3", "s2", "s4", "s0"]
    ordering = store.read("curriculum_orderings", filter="ordering = 'general-samples-length-easy-to-hard'").sort_by("position")
    assert ordering["sample_id"].to_pylist() == ["s1", "s3", "s2", "s4", "s0"]
    random_order = store.read("curriculum_orderings", filter="ordering = 'general-samples-length-random'")
    assert sorted(random_order["sample_id"].to_pylist()) == [f"s{i}" for i in range(5)]
    assert any(r["table"] == "general_samples" and r["action"] == "created" for r in summary["scalar indexes"])


# -- parameters ----------------------------------------------------------------------------------

BAD: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
    (prune, {"retention_hours": -1}, "retention_hours"),
    (prune, {"retention_hours": "soon"}, "retention_hours"),
    (prune, {"retention_hours": float("nan")}, "retention_hours"),
    (prune, {"tables": ["../escape"]}, "tables"),
    (prune, {"target_rows_per_fragment": 0}, "target_rows_per_fragment"),
    (index, {"tables": ["a/b"]}, "tables"),
    (index, {"tables": "priorities"}, "tables"),
    (index, {"min_vector_rows": -1}, "min_vector_rows"),
    (index, {"curriculum": {"source": "priorities", "metric": "bad metric"}}, "curriculum.metric"),
    (index, {"curriculum": {"source": "priorities", "directions": ["sideways"]}}, "curriculum.directions.0"),
    (index, {"curriculum": {"source": "priorities", "column": "nope"}}, "curriculum.column"),
    (prune, {"utility_threshold": -0.1}, "utility_threshold"),
    (distill, {}, "parameters"),
    (distill, {"general": {"model": "/no/such/model"}}, "general.model"),
    (distill, {"general": {"model": "/tmp", "precision": "int3"}}, "general.precision"),
    (distill, {"experiences": {"path": "/no/such.jsonl"}}, "experiences.path"),
    (distill, {"experiences": {"path": __file__, "dedup_threshold": 2}}, "experiences.dedup_threshold"),
    (distill, {"exemplars": {"buffer": "x", "task_id": -1, "model": __file__}}, "exemplars.task_id"),
    (prune, {"buffers": ["no/such"]}, "buffers"),
]


@pytest.mark.parametrize("flow_fn, params, field", BAD, ids=[f"{f.name}-{p}" for f, p, _ in BAD])
def test_bad_parameters_are_refused_before_any_work(store: replaystore.Store, flow_fn: Any, params: dict[str, Any], field: str) -> None:
    for i in range(3):
        add_priorities(store, i)
    before = snapshot(store)
    state = flow_fn(store.uri, **params, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationError) as err:
        state.result()
    assert err.value.field == field and err.value.rule
    assert task_run_count(state.state_details.flow_run_id) == 0
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sources": [], "train_loop": "replaystore.flows.stream:build_stream"}, "sources"),
        ({"sources": [{"table": "priorities", "weight": 0}], "train_loop": "replaystore.flows.stream:build_stream"}, "sources.0.weight"),
        ({"sources": [{"table": "priorities", "sampler": "fifo"}], "train_loop": "replaystore.flows.stream:build_stream"}, "sources.0.sampler"),
        ({"sources": [{"table": "priorities"}], "train_loop": "no.such.module:loop"}, "train_loop"),
        ({"sources": [{"table": "priorities", "columns": ["nope"]}], "train_loop": "replaystore.flows.stream:build_stream"}, "columns"),
        ({"sources": [{"table": "priorities"}], "train_loop": "replaystore.flows.stream:build_stream", "helpful_below": float("nan")}, "helpful_below"),
    ],
)
def test_stream_refuses_bad_parameters_before_any_work(store: replaystore.Store, params: dict[str, Any], field: str) -> None:
    add_priorities(store, 0, n=3)
    before = snapshot(store)
    state = stream(store_uri=store.uri, **params, return_state=True)
    with pytest.raises(ValidationError) as err:
        state.result()
    assert err.value.field == field
    assert task_run_count(state.state_details.flow_run_id) == 0
    assert snapshot(store) == before


def test_unknown_tables_are_refused_before_any_work(store: replaystore.Store) -> None:
    add_priorities(store, 0)
    before = snapshot(store)
    state = prune(store.uri, tables=["priorities", "nope"], retention_hours=0, return_state=True)
    with pytest.raises(NotFoundError, match="nope"):
        state.result()
    assert task_run_count(state.state_details.flow_run_id) == 0
    assert snapshot(store) == before


# -- retries and reports -------------------------------------------------------------------------


def test_only_transient_errors_are_retried() -> None:
    assert is_transient(CommitConflictError("storm")) and is_transient(OSError("io")) and is_transient(TimeoutError())
    assert not is_transient(ValidationError("x", "bad")) and not is_transient(NotFoundError("t"))
    assert not is_transient(ValueError("bad"))

    errors = {"io": OSError("disk hiccup"), "rule": ValidationError("field", "broken rule")}
    calls: list[str] = []

    @store_task(retries=2, delays=[0, 0])
    def flaky(error: str) -> int:
        calls.append(error)
        if len(calls) < 2:
            raise errors[error]
        return len(calls)

    @flow
    def run(error: str) -> int:
        return flaky(error)

    assert run("io") == 2
    calls.clear()
    with pytest.raises(ValidationError):
        run("rule")
    assert calls == ["rule"]
