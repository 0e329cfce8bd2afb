"""ReMe's own dumps (tests/fixtures/reme, Apache-2.0, sources in its README) in and out of the store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaystore
from replaystore import schemas
from replaystore.errors import ValidationError
from replaystore.experiences import ExperienceMemory
from replaystore.experiences.reme_io import LIFTED

FIXTURES = Path(__file__).parent / "fixtures" / "reme"


def lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def exported(memory: ExperienceMemory, tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / "out.jsonl"
    memory.export_jsonl(str(out))
    return {r["memory_id"]: r for r in map(json.loads, out.read_text().splitlines())}


def same_metadata(ours: dict, theirs: dict) -> bool:
    """ReMe's metadata comes back whole; ours adds only the columns ReMe keeps there (freq, utility, …)."""
    return {k: ours[k] for k in theirs} == theirs and set(ours) - set(theirs) <= set(LIFTED)


def test_current_library_dump_round_trips_field_for_field(store: replaystore.Store, tmp_path: Path) -> None:
    memory = store.experiences()
    assert memory.import_jsonl(str(FIXTURES / "appworld_head3.jsonl")) == 3
    back = exported(memory, tmp_path)
    for record in lines("appworld_head3.jsonl"):
        again = back[record["memory_id"]]
        assert {k: again[k] for k in record if k != "metadata"} == {k: v for k, v in record.items() if k != "metadata"}  # score 0.0, times, author
        assert same_metadata(again["metadata"], record["metadata"])  # with its null extra_info


def test_older_dump_keeps_experience_type_and_null_scores(store: replaystore.Store, tmp_path: Path) -> None:
    memory = store.experiences()
    records = lines("research_tips_head3.jsonl")
    assert all("experience_id" in r and r["score"] is None for r in records)
    assert memory.import_jsonl(str(FIXTURES / "research_tips_head3.jsonl")) == 3
    rows = {r["experience_id"]: r for r in memory.get([r["experience_id"] for r in records]).to_pylist()}
    back = exported(memory, tmp_path)
    for record in records:
        row, again = rows[record["experience_id"]], back[record["experience_id"]]
        assert row["score"] is None and again["score"] is None  # never 0.0
        assert json.loads(row["metadata"])["experience_type"] == record["experience_type"] == again["metadata"]["experience_type"]
        assert row["author"] == record["metadata"]["author"]
        assert again["time_created"] == record["metadata"]["created_time"]
        assert (again["when_to_use"], again["content"], again["workspace_id"]) == (record["when_to_use"], record["content"], record["workspace_id"])


def test_cookbook_json_array_imports_with_scores_and_confidence_as_written(store: replaystore.Store, tmp_path: Path) -> None:
    memory = store.experiences()
    records = json.loads((FIXTURES / "task_memory.jsonl").read_text())
    assert memory.import_jsonl(str(FIXTURES / "task_memory.jsonl")) == len(records) == 3
    rows = {r["experience_id"]: r for r in memory.get([r["memory_id"] for r in records]).to_pylist()}
    back = exported(memory, tmp_path)
    for record in records:
        assert rows[record["memory_id"]]["score"] == record["score"]  # 0.92, not 0.9200000166893005
        assert rows[record["memory_id"]]["confidence"] == record["metadata"]["confidence"]
        assert rows[record["memory_id"]]["tags"] == record["metadata"]["tags"]
        assert back[record["memory_id"]]["score"] == record["score"]
        assert same_metadata(back[record["memory_id"]]["metadata"], record["metadata"])
    assert '"score": 0.92,' in (tmp_path / "out.jsonl").read_text()


@pytest.mark.parametrize("existing", [False, True])
def test_a_dump_naming_one_memory_twice_is_refused_with_both_lines(store: replaystore.Store, tmp_path: Path, existing: bool) -> None:
    memory = store.experiences()
    if existing:
        memory.import_jsonl(str(FIXTURES / "appworld_head3.jsonl"))
    before = (store.dataset("experiences").version, store.count("experiences"))
    records = lines("appworld_head3.jsonl")
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join(json.dumps(r) for r in [*records, {**records[1], "content": "a second text"}]) + "\n")
    with pytest.raises(ValidationError, match=rf"memory_id: line 4 of .*twice.jsonl repeats '{records[1]['memory_id']}' from line 2"):
        memory.import_jsonl(str(twice))
    array = tmp_path / "twice.json"
    cookbook = json.loads((FIXTURES / "task_memory.jsonl").read_text())
    array.write_text(json.dumps([*cookbook, cookbook[0]], indent=2))
    first_line = 1 + array.read_text()[: array.read_text().index('"' + cookbook[0]["memory_id"])].count("\n")
    with pytest.raises(ValidationError, match=rf"line \d+ of .*twice.json repeats '{cookbook[0]['memory_id']}' from line {first_line - 2}"):
        memory.import_jsonl(str(array))
    assert (store.dataset("experiences").version, store.count("experiences")) == before


def test_a_broken_json_array_is_refused_with_its_line(store: replaystore.Store, tmp_path: Path) -> None:
    memory = store.experiences()
    broken = tmp_path / "broken.json"
    broken.write_text((FIXTURES / "task_memory.jsonl").read_text().rstrip().rstrip("]") + ",\n  {oops}\n]")
    with pytest.raises(ValidationError, match=r"line: line \d+ of .*broken.json is not JSON"):
        memory.import_jsonl(str(broken))
    assert store.count("experiences") == 0


def test_a_v2_table_migrates_its_float32_scores_to_float64(store: replaystore.Store) -> None:
    spec = schemas.load_spec("experiences")
    current = spec.arrow_schema({"embedding_dim": 384})
    fields = [pa.field(f.name, pa.float32(), f.nullable, f.metadata) if f.name in ("score", "confidence") else f for f in current]
    meta = dict(current.metadata)
    meta[schemas.VERSION_KEY] = b"2"
    old = pa.schema(fields, metadata=meta)
    row = {
        "experience_id": ["a"],
        "workspace": ["w"],
        "kind": ["insight"],
        "when_to_use": ["x"],
        "content": ["y"],
        "score": [0.92],
        "embedding": np.ones((1, 384), dtype=np.float32) / math.sqrt(384),
    }
    lance.write_dataset(schemas.conform(row, old, kind="experiences"), store.table_uri("experiences"))
    assert store.read("experiences", columns=["score"]).column(0).to_pylist() == [pytest.approx(0.92, abs=1e-7)]
    done = store.migrate("experiences")["experiences"]
    assert (done.schema_before, done.schema_after, done.added) == (2, spec.schema_version, ())
    assert store.dataset("experiences").schema.field("score").type == pa.float64()
    assert store.dataset("experiences").schema.field("confidence").type == pa.float64()
    assert store.count("experiences") == 1


class Vectors:
    """Text "v<i>" embeds to vectors[i]: the dedup pair is chosen by the test."""

    name, dim = "chosen-vectors", 8

    def __init__(self) -> None:
        self.vectors = np.zeros((2, self.dim), dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[int(t.split()[0][1:]) for t in texts]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), offset=st.floats(-3e-7, 3e-7))
def test_dedup_strictly_above_the_threshold_is_one_rule_in_a_call_and_against_stored_rows(tmp_path_factory, seed: int, offset: float) -> None:
    """A pair at cosine 0.5 ± a few float32 ulps: skipped in one call exactly when skipped against a stored row."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(8)
    a /= np.linalg.norm(a)
    other = rng.standard_normal(8)
    other -= (other @ a) * a
    other /= np.linalg.norm(other)
    cos = 0.5 + offset
    embedder = Vectors()
    embedder.vectors[:] = [a, cos * a + math.sqrt(1 - cos**2) * other]
    exact = embedder.vectors.astype(np.float64)
    rule = float(exact[0] @ exact[1] / np.linalg.norm(exact[0]) / np.linalg.norm(exact[1])) > 0.5
    store = replaystore.open(str(tmp_path_factory.mktemp("dedup")))
    together = store.experiences("together", embedder=embedder).add([{"when_to_use": "v0", "content": ""}, {"when_to_use": "v1", "content": ""}])
    apart_memory = store.experiences("apart", embedder=embedder)
    apart_memory.add([{"when_to_use": "v0", "content": ""}])
    apart = apart_memory.add([{"when_to_use": "v1", "content": ""}])
    assert bool(together.skipped) == bool(apart.skipped) == rule
    if rule:
        assert together.skipped[0].similarity == apart.skipped[0].similarity
