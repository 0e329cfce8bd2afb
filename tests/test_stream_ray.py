"""Ray Train over a stream: 2 CPU workers train a small MLP on a mixture of new-task data (an Arrow
table) and replay exemplars from the store; per-sample losses come back as one priorities merge, and
uses of experiences as one freq/utility update."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_digits

import replaystore
from replaystore.errors import ValidationError
from replaystore.stream import ExactK, LossLog, Prioritized, ReplayStream, Shuffled, Source, Uniform

ray = pytest.importorskip("ray")

from replaystore.stream.ray_train import ray_datasets, stream_trainer, write_back  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never join a neighbour's cluster
    yield
    ray.shutdown()


def digits_rows(classes: list[int], task_id: int | None = None) -> dict[str, Any]:
    """Digits images as raw uint8 bytes with shape/dtype; with `task_id`, as exemplar rows."""
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    images = x[keep].astype(np.uint8)
    n = int(keep.sum())
    extra = {} if task_id is None else {"buffer": ["digits"] * n, "task_id": [task_id] * n, "rank": [1] * n, "nbytes": [64] * n}
    return {
        **extra,
        "sample_id": np.flatnonzero(keep).astype(np.int64),
        "class_id": y[keep].astype(np.int64),
        "data": pa.array([row.tobytes() for row in images], pa.binary()),
        "shape": pa.array([[8, 8]] * len(images), pa.list_(pa.int32())),
        "dtype": ["uint8"] * len(images),
    }


def train_loop(stream: ReplayStream, log: LossLog, config: dict[str, Any]) -> dict[str, float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    model = ray.train.torch.prepare_model(model)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    names = [s.name for s in stream.sources]
    replay_rows = []
    for _ in range(config["epochs"]):
        for batch in stream:
            losses = torch.nn.functional.cross_entropy(model(batch["data"].float() / 16), batch["class_id"], reduction="none")
            optim.zero_grad()
            (losses * batch["_weight"]).mean().backward()
            optim.step()
            log.add(names, stream.state_dict()["versions"] or [None] * len(names), batch, losses)
            replay_rows.append(int((batch["_source"] == 1).sum()))
    return {"loss": float(losses.mean()), "replay_min": min(replay_rows), "replay_max": max(replay_rows)}


@pytest.mark.slow
def test_torch_trainer_trains_on_a_mixture_and_writes_priorities_back(ray_cluster: Any, store: replaystore.Store) -> None:
    store.append("exemplars", digits_rows([0, 1], task_id=0))
    task = pa.table(digits_rows([2, 3]))
    stream = ReplayStream(
        [
            Source.from_arrow("task", task, columns=["data", "shape", "dtype", "class_id"], sampler=Shuffled()),
            Source.from_store(store, "exemplars", columns=["data", "shape", "dtype", "class_id"], id_column="sample_id", sampler=Prioritized()),
        ],
        batch_size=16,
        mixing=ExactK(6),  # 6 replay rows in every global batch of 2 × 16
        seed=1,
    )
    trainer = stream_trainer(
        train_loop, stream, ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        train_loop_config={"epochs": 2},
        run_config=ray.train.RunConfig(storage_path=str(Path(store.uri).parent / "ray"), name="mix"),
    )  # fmt: skip
    result = trainer.fit()
    assert result.error is None
    assert result.metrics["replay_min"] == result.metrics["replay_max"] == 3  # 6 per global batch, 3 per rank
    assert result.metrics["loss"] < 0.5
    back = write_back(result, store, stream)
    priorities = store.read("priorities")
    assert back.priorities == store.dataset("priorities").version and back.utility == []
    assert set(priorities["source"].to_pylist()) == {"exemplars"}  # the task source has no id_column
    replayed = priorities.filter(pa.compute.equal(priorities["source"], "exemplars"))
    draws = 2 * -(-task.num_rows // (32 - 6)) * 6  # 2 epochs × steps (task rows end an epoch) × 6 replay rows
    assert draws // 2 < replayed.num_rows <= draws  # distinct replayed exemplars, drawn with replacement
    assert pa.compute.min(replayed["priority"]).as_py() > 0
    assert set(replayed["sample_id"].to_pylist()) <= {str(i) for i in store.read("exemplars")["sample_id"].to_pylist()}
    pins = lambda: [t for t in store.tags("exemplars") if t.startswith("pin-")]  # noqa: E731
    assert len(pins()) == 1, "each worker released its pins when its loop returned; the driver's stream holds one"
    stream.close()
    assert pins() == []


def regression_loop(stream: ReplayStream, log: LossLog, config: dict[str, Any]) -> dict[str, float]:
    """A linear probe on 384-d embeddings; losses logged per row, no helpful flags (the rule decides)."""
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(torch.nn.Linear(384, 1))
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    names = [s.name for s in stream.sources]
    for _ in range(config["epochs"]):
        for batch in stream:
            losses = (model(batch["embedding"]).squeeze(1) - batch["target"]) ** 2
            optim.zero_grad()
            losses.mean().backward()
            optim.step()
            log.add(names, stream.state_dict()["versions"], batch, losses)
    return {"loss": float(losses.mean())}


@pytest.mark.slow
def test_torch_trainer_writes_experience_uses_back(ray_cluster: Any, store: replaystore.Store) -> None:
    memory = store.experiences()
    topics = ["a flaky test", "a full disk", "a held lock", "a slow query", "a failed merge", "an expired token"]
    memory.upsert([{"experience_id": f"e{i}", "when_to_use": f"When {t} appears", "content": f"Handle {t}", "confidence": i / 5}
                   for i, t in enumerate(topics)])  # fmt: skip
    vectors = np.random.default_rng(0).standard_normal((120, 384)).astype(np.float32)
    task = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 384), "target": np.ones(120, np.float32)})
    rename = {"confidence": "target"}
    stream = ReplayStream(
        [
            Source.from_arrow("task", task, sampler=Shuffled()),
            Source.from_store(store, "experiences", columns=["embedding", "confidence"], rename=rename, id_column="experience_id", sampler=Uniform()),
        ],
        batch_size=8, mixing=ExactK(4), seed=2,  # 4 experiences in every global batch of 2 × 8
    )  # fmt: skip
    epochs, threshold = 2, 0.25
    trainer = stream_trainer(
        regression_loop, stream, ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        train_loop_config={"epochs": epochs}, run_config=ray.train.RunConfig(storage_path=str(Path(store.uri).parent / "ray"), name="exp"),
    )  # fmt: skip
    result = trainer.fit()
    assert result.error is None
    version = store.dataset("experiences").version
    with pytest.raises(ValidationError) as err:  # unflagged rows and no rule: refused before any write
        write_back(result, store, stream)
    assert err.value.field == "helpful_below"
    assert not store.exists("priorities") and store.dataset("experiences").version == version
    back = write_back(result, store, stream, helpful_below=threshold)
    [utility] = back.utility
    assert utility.uses == epochs * -(-task.num_rows // (16 - 4)) * 4  # every experience row trained on
    assert back.priorities is not None and store.count("priorities", "source = 'experiences'") > 0
    with result.checkpoint.as_directory() as folder:  # what the workers logged, mapped independently
        log = LossLog.load(sorted(Path(folder).glob("losses-rank*.arrow"))).to_pylist()
    uses, helpful = Counter(), Counter()
    for row in log:
        if row["source"] == "experiences":
            eid = store.read("experiences", version=row["version"], columns=["experience_id"])["experience_id"][row["position"]].as_py()
            uses[eid] += 1
            helpful[eid] += row["loss"] <= threshold
    rows = store.read("experiences", columns=["experience_id", "freq", "utility"]).to_pylist()
    assert {r["experience_id"]: (r["freq"], r["utility"]) for r in rows} == {f"e{i}": (uses[f"e{i}"], helpful[f"e{i}"]) for i in range(6)}
    assert 0 < utility.helpful == sum(helpful.values())


def test_ray_datasets_read_the_pinned_version_with_columns_and_filter(ray_cluster: Any, store: replaystore.Store) -> None:
    store.append("exemplars", digits_rows([0, 1], task_id=0))
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id", "class_id"], filter="class_id = 1"), batch_size=8)
    stream.set_epoch(0)
    store.append("exemplars", digits_rows([1], task_id=1))
    ds = ray_datasets(stream)["exemplars"]
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    assert table.column_names == ["sample_id", "class_id"]
    assert set(table["class_id"].to_pylist()) == {1}
    assert table.num_rows == sum(1 for c in digits_rows([0, 1])["class_id"] if c == 1)  # not the later append
    stream.close()


def test_ray_datasets_rename_columns_as_the_stream_does(ray_cluster: Any, store: replaystore.Store) -> None:
    store.append("exemplars", digits_rows([0, 1], task_id=0))
    stream = ReplayStream(Source.from_store(store, "exemplars", columns=["sample_id", "class_id"], rename={"class_id": "label"}), batch_size=8)
    table = pa.concat_tables(ray.get(ray_datasets(stream)["exemplars"].to_arrow_refs()))
    assert table.column_names == ["sample_id", "label"]
    assert sorted(table["label"].to_pylist()) == sorted(digits_rows([0, 1])["class_id"])
    stream.close()
