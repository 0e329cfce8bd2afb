"""ExperienceMemory on real Lance tables with the real MiniLM embedder: dedup, retrieval,
workspace isolation, counters, the refine rule, ReMe JSONL, distillation, bad input."""

from __future__ import annotations

import inspect
import json
import json as json_module
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore.errors import NotFoundError, ValidationError
from replaystore.experiences import ExperienceMemory, RuleExtractor, VectorIndexSpec, default_embedder
from replaystore.experiences.extractors import Trajectory, group
from replaystore.experiences.memory import RESULT_COLUMNS

WORKSPACES = ("alpha", "beta", "gamma")


def docstring_rows(count: int) -> list[dict[str, str]]:
    """Distinct real texts: first lines of stdlib docstrings as scenarios, the rest as lessons."""
    rows, seen = [], set()
    for module in (json_module, inspect, Path, np.linalg):
        for name, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) or ""
            first, _, rest = doc.partition("\n")
            if name.startswith("_") or len(first) < 20 or first in seen:
                continue
            seen.add(first)
            rows.append({"when_to_use": first, "content": (rest.strip() or first)[:120]})
    assert len(rows) >= count
    return rows[:count]


@pytest.fixture
def memory(store: replaystore.Store) -> ExperienceMemory:
    return store.experiences()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> ExperienceMemory:
    """Three workspaces of real texts, some archived; shared by read-only tests."""
    memory = replaystore.open(str(tmp_path_factory.mktemp("exp") / "store")).experiences()
    rows = docstring_rows(36)
    for i, row in enumerate(rows):
        row["workspace"] = WORKSPACES[i % 3]
        row["experience_id"] = f"e{i}"
        row["status"] = "archived" if i % 7 == 0 else "active"
    memory.upsert(rows)
    return memory


# -- add and dedup -------------------------------------------------------------------------------


def test_add_embeds_when_to_use_and_returns_ids(memory: ExperienceMemory) -> None:
    report = memory.add([{"when_to_use": "When an HTTP API answers 429", "content": "Back off and retry", "kind": "failure"}], workspace="w")
    assert len(report.added) == 1 and not report.skipped
    stored = memory.store.read("experiences", filter=f"experience_id = '{report.added[0]}'").to_pylist()[0]
    expected = default_embedder().embed(["When an HTTP API answers 429"])[0]
    assert np.allclose(stored["embedding"], expected, atol=1e-5)
    assert stored["workspace"] == "w" and stored["freq"] == 0 and stored["utility"] == 0 and stored["status"] == "active"


def test_empty_when_to_use_embeds_content(memory: ExperienceMemory) -> None:
    report = memory.add([{"when_to_use": "", "content": "Always pin dependency versions in CI"}])
    stored = memory.store.read("experiences", filter=f"experience_id = '{report.added[0]}'")["embedding"][0].as_py()
    assert np.allclose(stored, default_embedder().embed(["Always pin dependency versions in CI"])[0], atol=1e-5)


def test_dedup_threshold_against_store_and_same_batch(memory: ExperienceMemory) -> None:
    first = memory.add([{"when_to_use": "When an HTTP API answers 429 too many requests", "content": "Back off exponentially, then retry"}], workspace="w")
    near = {"when_to_use": "When a web API returns HTTP 429", "content": "Retry with exponential backoff"}
    far = {"when_to_use": "When parsing CSV files with quoted commas", "content": "Use the csv module instead of split"}
    report = memory.add([near, far, dict(far)], workspace="w")
    assert [s.duplicate_of for s in report.skipped] == [first.added[0], report.added[0]]
    assert [s.index for s in report.skipped] == [0, 2]
    assert report.skipped[0].similarity > 0.5 and report.skipped[1].similarity > 0.99
    assert memory.store.count("experiences") == 2


def test_dedup_threshold_is_configurable_and_strict(store: replaystore.Store) -> None:
    a = {"when_to_use": "When a web API returns HTTP 429", "content": "Retry with exponential backoff"}
    b = {"when_to_use": "When an HTTP API answers 429 too many requests", "content": "Back off exponentially, then retry"}
    vectors = default_embedder().embed([f"{a['when_to_use']} {a['content']}", f"{b['when_to_use']} {b['content']}"])
    similarity = float(vectors[0] @ vectors[1])
    above = store.experiences("at_threshold", dedup_threshold=similarity + 1e-4)
    above.add([a])
    assert above.add([b]).added  # similarity not above the threshold: kept
    below = store.experiences("below_threshold", dedup_threshold=similarity - 1e-4)
    below.add([a])
    assert not below.add([b]).added


def test_dedup_ignores_other_workspaces_and_archived(memory: ExperienceMemory) -> None:
    row = {"when_to_use": "When a build cache is stale", "content": "Clear it and rebuild"}
    first = memory.add([row], workspace="w1")
    assert memory.add([row], workspace="w2").added  # other workspace: not a duplicate
    memory.store.update("experiences", {"status": "'archived'"}, where=f"experience_id = '{first.added[0]}'")
    assert memory.add([row], workspace="w1").added  # only active experiences count


# -- retrieve ------------------------------------------------------------------------------------


def test_retrieve_ranks_by_similarity_and_counts_freq(memory: ExperienceMemory) -> None:
    memory.add(
        [
            {"when_to_use": "When an HTTP API answers 429 too many requests", "content": "Back off exponentially", "score": 0.9},
            {"when_to_use": "When parsing CSV files with quoted commas", "content": "Use the csv module", "score": 0.8},
        ],
        workspace="w",
    )
    hits = memory.retrieve("rate limited by a web service", "w", k=2)
    assert hits["when_to_use"][0].as_py().startswith("When an HTTP API")
    sims = hits["similarity"].to_pylist()
    assert sims[0] > sims[1] and "embedding" not in hits.column_names
    assert hits["score"].to_pylist() == pytest.approx([0.9, 0.8])  # similarity never overwrites score
    assert hits["freq"].to_pylist() == [1, 1]
    stored = memory.get(hits["experience_id"].to_pylist())
    assert stored["freq"].to_pylist() == [1, 1] and stored["score"].to_pylist() == pytest.approx([0.9, 0.8])
    memory.retrieve("rate limited by a web service", "w", k=1, record=False)
    assert sorted(memory.get(hits["experience_id"].to_pylist())["freq"].to_pylist()) == [1, 1]


def test_retrieve_returns_the_columns_asked_for_and_still_counts(memory: ExperienceMemory) -> None:
    report = memory.add([{"when_to_use": "When a cache stampedes after a deploy", "content": "Warm it first", "tags": ["cache"]}], workspace="c")
    [eid] = report.added
    lean = memory.retrieve("cache stampede", "c", columns=["content"])
    assert lean.column_names == ["content", "similarity", "relevance"] and lean["content"].to_pylist() == ["Warm it first"]
    full = memory.retrieve("cache stampede", "c", columns="all")
    assert full.column_names == [*memory._columns, "similarity", "relevance"]
    assert full["freq"].to_pylist() == [2] and full["tags"].to_pylist() == [["cache"]]  # the lean retrieve counted too
    assert memory.retrieve("cache stampede", "c")["freq"].to_pylist() == [3]
    for bad in (["nope"], [], "some", ["embedding"], 3):
        with pytest.raises(ValidationError) as err:
            memory.retrieve("cache", "c", columns=bad)  # type: ignore[arg-type]
        assert err.value.field == "columns"
    assert memory.get([eid])["freq"].to_pylist() == [3]
    assert memory.get([]).num_rows == 0


def test_retrieve_where_filter_and_text_modes(memory: ExperienceMemory) -> None:
    memory.add(
        [
            {"when_to_use": "When a deployment fails its health check", "content": "Roll back first", "kind": "failure"},
            {"when_to_use": "When a migration locks a large table", "content": "Run it in batches", "kind": "success"},
        ],
        workspace="w",
    )
    hits = memory.retrieve("deployment health check failing", "w", k=5, where="kind = 'success'", record=False)
    assert hits["kind"].to_pylist() == ["success"]
    with pytest.raises(ValidationError, match="mode"):
        memory.retrieve("migration", "w", mode="text")  # no full-text index yet
    memory.build_index()
    text = memory.retrieve("migration locks", "w", mode="text", record=False)
    assert text["when_to_use"].to_pylist() == ["When a migration locks a large table"]
    hybrid = memory.retrieve("migration locks", "w", mode="hybrid", record=False)
    assert hybrid["when_to_use"][0].as_py() == "When a migration locks a large table"
    assert all(-1.0 <= s <= 1.0 for s in hybrid["similarity"].to_pylist())


FILTERS = [None, "kind = 'insight'", "freq >= 0", "workspace = 'beta'", "workspace != 'alpha' OR status = 'archived'"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    workspace=st.sampled_from(WORKSPACES + ("nobody",)),
    where=st.sampled_from(FILTERS),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    columns=st.sampled_from([None, "all"]),
)
def test_retrieval_never_crosses_workspaces(populated: ExperienceMemory, workspace: str, where: str | None, k: int, seed: int, columns: str | None) -> None:
    vector = np.random.default_rng(seed).standard_normal(populated.embedder.dim).astype(np.float32)
    hits = populated.search(vector / np.linalg.norm(vector), workspace, k=k, where=where, columns=columns)
    stored = populated.get(hits["experience_id"].to_pylist())  # the default columns leave workspace and status out
    assert set(stored["workspace"].to_pylist()) <= {workspace}
    assert set(stored["status"].to_pylist()) <= {"active"}
    if columns == "all":
        assert hits.column_names == [*populated._columns, "similarity"]
        assert set(hits["workspace"].to_pylist()) <= {workspace}
    else:
        assert hits.column_names == [*RESULT_COLUMNS, "similarity"]
    expected = populated.store.count("experiences", filter=f"workspace = '{workspace}' AND status = 'active'" + (f" AND ({where})" if where else ""))
    assert hits.num_rows == min(k, expected)


@pytest.mark.parametrize("where", ["1=1) OR (1=1", "kind = 'x' --", "1=1; DROP", "(kind = 'x'", "kind = 'unterminated"])
def test_filters_that_could_escape_the_workspace_are_refused(populated: ExperienceMemory, where: str) -> None:
    with pytest.raises(ValidationError, match="where"):
        populated.retrieve("anything", "alpha", where=where)


# -- counters and refine -------------------------------------------------------------------------


def test_record_use_counts_helpful_uses_in_one_version(memory: ExperienceMemory) -> None:
    ids = ["a", "b", "c"]
    memory.upsert([{**row, "experience_id": i} for row, i in zip(docstring_rows(3), ids)])
    before = memory.store.dataset("experiences").version
    version = memory.record_use([ids[0], ids[1], ids[0], ids[2]], helpful=[True, True, True, False])
    assert version == before + 1
    got = dict(zip(*memory.get(ids).select(["experience_id", "utility"]).to_pydict().values()))
    assert got == {ids[0]: 2, ids[1]: 1, ids[2]: 0}
    assert memory.record_use([ids[2]], helpful=False) is None


def test_record_use_unknown_id_changes_nothing(memory: ExperienceMemory) -> None:
    ids = ["a"]
    memory.upsert([{**docstring_rows(1)[0], "experience_id": "a"}])
    before = memory.store.dataset("experiences").version
    with pytest.raises(NotFoundError, match="nope"):
        memory.record_use([ids[0], "nope"])
    with pytest.raises(ValidationError, match="helpful"):
        memory.record_use(ids, helpful=[True, False])
    assert memory.store.dataset("experiences").version == before


@pytest.mark.parametrize(
    ("freq", "utility", "archived"),
    [(4, 0, False), (5, 2, True), (5, 3, False), (6, 3, False), (6, 2, True), (10, 3, True), (10, 5, False), (0, 0, False)],
)
def test_refine_rule_at_its_boundaries(memory: ExperienceMemory, freq: int, utility: int, archived: bool) -> None:
    eid = memory.add([{"when_to_use": "When the cache misses", "content": "Warm it first"}]).added[0]
    memory.store.update("experiences", {"freq": str(freq), "utility": str(utility)}, where=f"experience_id = '{eid}'")
    out = memory.refine(freq_threshold=5, utility_threshold=0.5)
    assert out["experience_id"].to_pylist() == ([eid] if archived else [])
    assert memory.get([eid])["status"][0].as_py() == ("archived" if archived else "active")
    if archived:
        assert memory.retrieve("the cache misses", "default", record=False).num_rows == 0
        memory.restore([eid])
        assert memory.get([eid])["status"][0].as_py() == "active"


def test_refine_utility_threshold_uses_exact_division(memory: ExperienceMemory) -> None:
    """0.3 × 10 is 3.0000000000000004 in floating point; 3/10 < 0.3 must still be false."""
    eid = memory.add([{"when_to_use": "When a job times out", "content": "Split it"}]).added[0]
    memory.store.update("experiences", {"freq": "10", "utility": "3"}, where=f"experience_id = '{eid}'")
    assert memory.refine(freq_threshold=10, utility_threshold=0.3).num_rows == 0


@pytest.mark.parametrize(("kwargs", "field"), [({"freq_threshold": 0}, "freq_threshold"), ({"utility_threshold": float("nan")}, "utility_threshold")])
def test_refine_refuses_bad_thresholds(memory: ExperienceMemory, kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        memory.refine(**kwargs)


# -- JSONL, distill, bad input -------------------------------------------------------------------


def test_reme_jsonl_round_trip(populated: ExperienceMemory, tmp_path: Path) -> None:
    dump = tmp_path / "reme.jsonl"
    assert populated.export_jsonl(str(dump)) == 36
    first = json.loads(dump.read_text().splitlines()[0])
    assert set(first) == {"workspace_id", "memory_id", "memory_type", "when_to_use", "content", "score", "time_created", "time_modified", "author", "metadata"}
    assert first["memory_type"] == "task" and {"freq", "utility"} <= set(first["metadata"])
    other = replaystore.open(str(tmp_path / "other")).experiences()
    assert other.import_jsonl(str(dump)) == 36
    again = tmp_path / "again.jsonl"
    other.export_jsonl(str(again))
    key = lambda line: json.loads(line)["memory_id"]  # noqa: E731
    assert sorted(dump.read_text().splitlines(), key=key) == sorted(again.read_text().splitlines(), key=key)
    assert other.import_jsonl(str(dump)) == 36 and other.store.count("experiences") == 36  # idempotent


def test_import_reme_record_with_counters(memory: ExperienceMemory, tmp_path: Path) -> None:
    record = {
        "workspace_id": "appworld",
        "memory_id": "m1",
        "memory_type": "task",
        "when_to_use": "When logging in fails",
        "content": "Check the token expiry first",
        "score": 0.8,
        "time_created": "2025-09-01 10:00:00",
        "time_modified": "2025-09-02 11:00:00",
        "author": "qwen",
        "metadata": {"freq": 7, "utility": 2, "tags": ["auth"], "step_type": "debug"},
    }
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n")
    memory.import_jsonl(str(path))
    row = memory.get(["m1"]).to_pylist()[0]
    assert (row["workspace"], row["freq"], row["utility"], row["tags"], row["author"]) == ("appworld", 7, 2, ["auth"], "qwen")
    assert json.loads(row["metadata"]) == {"step_type": "debug"} and row["created_at"].year == 2025


def test_import_into_a_workspace_never_moves_memories_out_of_theirs(memory: ExperienceMemory, tmp_path: Path) -> None:
    """An upsert by id would move `m1` from workspace `a` to `b`: refused, nothing written; new ids go into `b`."""
    path = tmp_path / "dump.jsonl"
    path.write_text(json.dumps({"workspace_id": "a", "memory_id": "m1", "when_to_use": "When the disk is full", "content": "Clean the cache"}) + "\n")
    memory.import_jsonl(str(path))
    before = memory.store.dataset("experiences").version
    with pytest.raises(ValidationError, match=r"workspace: 1 memories .*'m1' \(in 'a'\).* would move them"):
        memory.import_jsonl(str(path), workspace="b")
    assert memory.store.dataset("experiences").version == before and memory.get(["m1"])["workspace"].to_pylist() == ["a"]
    assert memory.import_jsonl(str(path), workspace="a") == 1  # into its own workspace: an idempotent upsert
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(json.dumps({"workspace_id": "a", "memory_id": "m2", "when_to_use": "When a job hangs", "content": "Dump its stack"}) + "\n")
    assert memory.import_jsonl(str(fresh), workspace="b") == 1 and memory.get(["m2"])["workspace"].to_pylist() == ["b"]


def test_import_bad_line_writes_nothing(memory: ExperienceMemory, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"workspace_id": "w", "memory_id": "ok", "when_to_use": "a", "content": "b"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "memory_id": "x", "metadata": {"freq": -1}}) + "\n")
    with pytest.raises(ValidationError, match="freq"):
        memory.import_jsonl(str(path))
    assert memory.store.count("experiences") == 0


TRAJECTORIES = [
    {
        "task_id": "t1",
        "score": 1.0,
        "messages": [
            {"role": "user", "content": "Book the cheapest flight from Oslo to Rome next Friday"},
            {"role": "assistant", "content": "Search flights sorted by price for the date"},
            {"role": "tool", "name": "flight_search", "content": "3 results, cheapest 89 EUR"},
            {"role": "assistant", "content": "Book the 89 EUR flight and confirm the booking reference"},
        ],
    },
    {
        "task_id": "t1",
        "score": 0.0,
        "messages": [
            {"role": "user", "content": "Book the cheapest flight from Oslo to Rome next Friday"},
            {"role": "assistant", "content": "Book the first flight listed without comparing prices"},
        ],
    },
]


def test_distill_with_rule_extractor_adds_validated_lessons(store: replaystore.Store) -> None:
    """Lessons of one task share its wording, so this keeps only near-copies out (threshold 0.95)."""
    memory = store.experiences(dedup_threshold=0.95)
    report = memory.distill(TRAJECTORIES, workspace="travel")
    assert report.candidates == 3 and not report.rejected
    rows = memory.get(report.added).to_pylist()
    assert sorted(r["kind"] for r in rows) == ["comparative", "failure", "success"]
    assert all(r["score"] >= 0.5 and r["author"] == "rule-extractor" and r["source_ids"] for r in rows)
    assert memory.distill(TRAJECTORIES, workspace="travel").added == []  # the same lessons again are duplicates


def test_distill_rejects_lessons_below_min_score(memory: ExperienceMemory) -> None:
    empty = [{"task_id": "t", "score": 1.0, "messages": [{"role": "user", "content": "Do it"}]}]
    report = memory.distill(empty, extractor=RuleExtractor(min_words=50))
    assert report.candidates == 1 and len(report.rejected) == 1 and report.rejected[0]["score"] < 0.5 and not report.added


def test_grouping_follows_reme() -> None:
    items = [Trajectory("a", (), 1.0), Trajectory("a", (), 0.2), Trajectory("b", (), 0.5), Trajectory("c", (), 1.0), Trajectory("c", (), 1.0)]
    kinds = sorted(g.kind for g in group(items))
    assert kinds == ["comparative", "failure", "failure", "success", "success", "success"]


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([{"when_to_use": "", "content": "  "}], "content"),
        ([{"when_to_use": 3, "content": "x"}], "when_to_use"),
        ([{"when_to_use": "a", "content": "b", "kind": "guess"}], "kind"),
        ([{"when_to_use": "a", "content": "b", "confidence": 2.0}], "confidence"),
        ([{"when_to_use": "a", "content": "b", "embedding": [0.0] * 384}], "embedding"),
        ([{"when_to_use": "a", "content": "b", "colour": "red"}], "colour"),
    ],
)
def test_bad_experiences_are_refused_and_nothing_written(memory: ExperienceMemory, rows: list, field: str) -> None:
    before = memory.store.dataset("experiences").version
    with pytest.raises(ValidationError) as err:
        memory.add(rows)
    assert err.value.field == field
    assert memory.store.dataset("experiences").version == before


def test_embedder_dimension_must_match_the_table(store: replaystore.Store) -> None:
    class Tiny:
        name, dim = "tiny", 8

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.eye(8, dtype=np.float32)[: len(texts)]

    store.experiences()  # creates the 384-d table
    with pytest.raises(ValidationError, match="8-d vectors but table 'experiences' stores 384-d"):
        store.experiences(embedder=Tiny())
    assert store.experiences("tiny_table", embedder=Tiny()).add([{"when_to_use": "a", "content": "b"}]).added
    with pytest.raises(ValidationError, match="vector"):
        store.experiences().search(np.ones(8, dtype=np.float32), "default")


ODD_IDS = ["o'brien", "a,b", "x) OR (1=1", "ünï-côdé", "plain"]


@pytest.fixture(scope="module")
def odd_ids(tmp_path_factory: pytest.TempPathFactory) -> ExperienceMemory:
    memory = replaystore.open(str(tmp_path_factory.mktemp("odd") / "store")).experiences()
    memory.upsert([{**row, "experience_id": eid} for row, eid in zip(docstring_rows(len(ODD_IDS)), ODD_IDS)])
    return memory


@settings(max_examples=10, deadline=None)
@given(uses=st.lists(st.tuples(st.sampled_from(ODD_IDS), st.booleans()), min_size=1, max_size=12))
def test_record_use_adds_exactly_the_helpful_uses(odd_ids: ExperienceMemory, uses: list[tuple[str, bool]]) -> None:
    before = dict(zip(*odd_ids.get(ODD_IDS).select(["experience_id", "utility"]).to_pydict().values()))
    odd_ids.record_use([i for i, _ in uses], helpful=[h for _, h in uses])
    after = dict(zip(*odd_ids.get(ODD_IDS).select(["experience_id", "utility"]).to_pydict().values()))
    assert {i: after[i] - before[i] for i in ODD_IDS} == {i: sum(h for j, h in uses if j == i) for i in ODD_IDS}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counters=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=8),
    freq_threshold=st.integers(1, 8),
    utility_threshold=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0]),
)
def test_refine_archives_exactly_the_rule(store: replaystore.Store, counters: list[tuple[int, int]], freq_threshold: int, utility_threshold: float) -> None:
    memory = store.experiences(f"t{abs(hash((tuple(counters), freq_threshold, utility_threshold))) % 10**9}")
    rows = docstring_rows(len(counters))
    memory.upsert([{**r, "experience_id": f"r{i}", "freq": f, "utility": u} for i, (r, (f, u)) in enumerate(zip(rows, counters))])
    archived = set(memory.refine(freq_threshold, utility_threshold)["experience_id"].to_pylist())
    assert archived == {f"r{i}" for i, (f, u) in enumerate(counters) if f >= freq_threshold and u / f < utility_threshold}


class TableVectors:
    """Text "v<i>" embeds to row i of a fixed matrix of unit vectors: exact answers are known."""

    name, dim = "table-vectors", 16

    def __init__(self, rows: int) -> None:
        m = np.random.default_rng(7).standard_normal((rows, self.dim)).astype(np.float32)
        self.vectors = m / np.linalg.norm(m, axis=1, keepdims=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[int(t.split()[0][1:]) for t in texts]]


def test_indexed_search_is_exact_when_every_partition_is_probed_and_sees_later_writes(store: replaystore.Store) -> None:
    embedder = TableVectors(501)
    spec = VectorIndexSpec(num_partitions=4, nprobes=4)
    memory = store.experiences("vec", embedder=embedder, index=spec)
    rows = [{"experience_id": f"r{i}", "when_to_use": f"v{i}", "workspace": "a" if i % 5 else "b"} for i in range(500)]
    memory.upsert(rows)
    assert memory.build_index(vector=True).vector == spec.index_type
    assert sorted(memory.prewarm()) == ["embedding_idx", "status_idx", "workspace_idx"]
    query = embedder.vectors[3]
    hits = memory.search(query, "a", k=7)
    in_a = [i for i in range(500) if i % 5]
    exact = sorted(in_a, key=lambda i: -float(embedder.vectors[i] @ query))[:7]
    assert hits["experience_id"].to_pylist() == [f"r{i}" for i in exact]
    assert hits["similarity"].to_numpy() == pytest.approx(embedder.vectors[exact] @ query, abs=1e-5)
    # another writer's later commits: a new row (not yet in the index) and an archived one
    other = store.experiences("vec", embedder=embedder, index=spec)
    other.upsert([{"experience_id": "new", "when_to_use": "v500", "workspace": "a"}])
    assert memory.search(embedder.vectors[500], "a", k=1)["experience_id"].to_pylist() == ["new"]
    store.update("vec", {"status": "'archived'"}, where="experience_id = 'r3'")
    assert "r3" not in memory.search(query, "a", k=7)["experience_id"].to_pylist()
    assert set(memory.search(query, "b", k=50, columns=["workspace"])["workspace"].to_pylist()) == {"b"}


@pytest.mark.parametrize("indexed", [False, True])
def test_search_of_a_workspace_holding_nearly_every_row_checks_its_hits_and_falls_back(store: replaystore.Store, indexed: bool) -> None:
    """A dominant workspace is searched unfiltered and its hits checked; when too few of them are
    in scope (a cluster of another workspace's or archived rows around the query), the
    prefiltered search answers. Either way the hits are the exact top-k of the scope."""
    embedder = TableVectors(600)
    near = embedder.vectors[0] + 0.05 * embedder.vectors[1:21]  # rows 1..20 crowd around row 0's vector
    embedder.vectors[1:21] = near / np.linalg.norm(near, axis=1, keepdims=True)
    spec = VectorIndexSpec(index_type="IVF_FLAT", num_partitions=4, nprobes=4)  # exact distances: crowded rows
    memory = store.experiences("dominant", embedder=embedder, index=spec)
    memory.upsert([{"experience_id": f"r{i}", "when_to_use": f"v{i}", "workspace": "b" if 1 <= i <= 12 else "a"} for i in range(600)])
    store.update("dominant", {"status": "'archived'"}, where="experience_id IN ('r13', 'r14', 'r15')")
    if indexed:
        memory.build_index(vector=True)

    def exact(workspace: str, query: np.ndarray, k: int) -> list[str]:
        table = store.dataset("dominant").to_table(filter=f"workspace = '{workspace}' AND status = 'active'")
        ids, emb = table["experience_id"].to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False))
        return [ids[i] for i in np.argsort(-(emb @ query), kind="stable")[:k]]

    assert memory._share(memory._dataset(), "a") == pytest.approx(585 / 600)
    for query, k in [(embedder.vectors[0], 5), (embedder.vectors[300], 5), (embedder.vectors[0], 30)]:
        assert memory.search(query, "a", k=k)["experience_id"].to_pylist() == exact("a", query, k)
    assert memory.search(embedder.vectors[0], "b", k=5)["experience_id"].to_pylist() == exact("b", embedder.vectors[0], 5)
    # the share is a cached hint: rows archived after it was counted are still never returned
    store.update("dominant", {"status": "'archived'"}, where="experience_id IN ('r0', 'r16', 'r17')")
    hits = memory.search(embedder.vectors[0], "a", k=5)
    assert hits["experience_id"].to_pylist() == exact("a", embedder.vectors[0], 5)
    assert not {"r0", "r16", "r17"} & set(hits["experience_id"].to_pylist())


def test_build_index_compacts_the_fragments_each_add_left(store: replaystore.Store) -> None:
    embedder = TableVectors(300)
    memory = store.experiences("frag", embedder=embedder, index=VectorIndexSpec(num_partitions=2, nprobes=2))
    for start in range(0, 300, 50):
        memory.upsert([{"experience_id": f"r{i}", "when_to_use": f"v{i}"} for i in range(start, start + 50)])
    fragments = len(store.dataset("frag").get_fragments())
    report = memory.build_index(vector=True)
    assert report.fragments == (fragments, 1) and fragments > 1
    assert store.count("frag") == 300
    assert memory.search(embedder.vectors[7], "default", k=1)["experience_id"].to_pylist() == ["r7"]


def test_first_search_loads_new_search_indexes_once_unless_turned_off(store: replaystore.Store) -> None:
    embedder = TableVectors(300)
    spec = VectorIndexSpec(num_partitions=2, nprobes=2)
    store.experiences("warm", embedder=embedder, index=spec).upsert([{"experience_id": f"r{i}", "when_to_use": f"v{i}"} for i in range(300)])
    lazy = store.experiences("warm", embedder=embedder, index=spec)
    cold = store.experiences("warm", embedder=embedder, index=spec, auto_prewarm=False)
    lazy.search(embedder.vectors[0], "default")  # no index yet: nothing to load
    lazy.build_index(vector=True)
    lazy.search(embedder.vectors[0], "default")
    cold.search(embedder.vectors[0], "default")
    assert lazy.prewarm() == []  # the search loaded them already
    assert sorted(cold.prewarm()) == ["embedding_idx", "status_idx", "workspace_idx"]
    lazy.retrieve("v1")  # counts freq: a new version, same indexes, nothing reloaded
    assert lazy.prewarm() == []
    lazy.build_index(vector=True)  # new indexes: the next search loads them
    lazy.search(embedder.vectors[0], "default")
    assert lazy.prewarm() == []
    with pytest.raises(ValidationError) as err:
        store.experiences("warm", embedder=embedder, auto_prewarm="yes")
    assert err.value.field == "auto_prewarm"


def test_loading_the_embedder_writes_nothing_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """transformers draws a "Loading weights" bar for every model it loads; a local embedder hides it, and leaves the setting as it was."""
    from transformers.utils import logging as hf_logging

    from replaystore.experiences.embedder import TransformerEmbedder
    from replaystore.gere.offline import minilm_path

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    assert TransformerEmbedder(minilm_path()).embed(["When a web API answers HTTP 429"]).shape == (1, 384)
    assert capfd.readouterr().err == "" and hf_logging.is_progress_bar_enabled()
