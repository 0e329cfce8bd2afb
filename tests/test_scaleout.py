"""Scale-out: a 2-node Ray cluster reading stream shards from a store on S3; the deploy specs.

The cluster is `ray.cluster_utils.Cluster` (two raylets, one CPU each, each with its own node
resource so each rank is placed on its own node); the store lives on moto's S3 server on the
loopback interface, which both nodes reach with storage options only.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from s3_server import S3Server, s3_server  # noqa: F401 - fixture

import replaystore

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = sorted(p for folder in ("ray", "cluster") for p in (ROOT / "deploy" / folder).glob("*") if p.is_file())


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"node-0": 1}})
    cluster.add_node(num_cpus=1, resources={"node-1": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # Ray starts raylets with fork+exec
def test_stream_shards_on_two_nodes_are_read_exactly_once_from_s3(two_nodes: Any, s3_server: S3Server) -> None:  # noqa: F811
    ray = two_nodes
    uri = f"s3://{s3_server.new_bucket()}/store"
    store = replaystore.open(uri, s3_server.storage_options)
    n = 1000
    for start in range(0, n, 250):  # several fragments, as appends make them
        ids = np.arange(start, start + 250)
        store.append("exemplars", {"buffer": ["b"] * 250, "sample_id": ids, "class_id": ids % 10, "task_id": ids * 0,
                                   "rank": ids * 0 + 1, "nbytes": ids * 0 + 64})  # fmt: skip
    version = store.dataset("exemplars").version
    store.append("exemplars", {"buffer": ["late"], "sample_id": [n], "class_id": [0], "task_id": [0], "rank": [1], "nbytes": [64]})

    consume = ray.remote(num_cpus=1)(_consumer())
    refs = [consume.options(resources={f"node-{r}": 1}).remote(uri, s3_server.storage_options, r, 2, version) for r in range(2)]
    (node_a, ids_a), (node_b, ids_b) = ray.get(refs, timeout=300)

    assert node_a != node_b, "each rank ran on its own node"
    assert not set(ids_a) & set(ids_b), "a row was read by both nodes"
    assert sorted(ids_a + ids_b) == list(range(n)), "every row of the pinned version read exactly once (the late row not at all)"
    assert abs(len(ids_a) - len(ids_b)) <= 32


def test_deploy_specs_parse_and_name_real_entrypoints() -> None:
    specs = {p.name: p for p in DEPLOY}
    assert {"rayjob.yaml", "cluster.yaml", "train_replay.py", "work-pool.sh", "prefect.yaml", "Dockerfile"} <= set(specs)
    job = yaml.safe_load(specs["rayjob.yaml"].read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert "deploy/ray/train_replay.py" in job["spec"]["entrypoint"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for w in workers for c in w["template"]["spec"]["containers"])
    launcher = yaml.safe_load(specs["cluster.yaml"].read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type"} <= set(launcher)
    flows = yaml.safe_load(specs["prefect.yaml"].read_text())
    for deployment in flows["deployments"]:
        module, _, name = deployment["entrypoint"].rpartition(".")
        tree = ast.parse(Path(str(importlib.util.find_spec(module).origin)).read_text())  # type: ignore[union-attr]
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "replaystore-k8s"
    ast.parse(specs["train_replay.py"].read_text())


SECRET = re.compile(r"(aws_secret_access_key|AWS_SECRET_ACCESS_KEY)\s*[:=]\s*['\"]?(?!\$|\{|<)[A-Za-z0-9/+]{8,}")


def test_deploy_specs_carry_no_credentials() -> None:
    for path in DEPLOY:
        text = path.read_text()
        assert not SECRET.search(text), f"{path} holds a credential; reference a secret instead"
        assert "AKIA" not in text, f"{path} holds an AWS access key id"


def _consumer() -> Any:
    """Built here so cloudpickle ships it by value: Ray workers cannot import test modules."""

    def consume(uri: str, options: dict[str, str], rank: int, world: int, version: int) -> tuple[str, list[int]]:
        """One worker: its rank's share of one epoch of the stream, at the version the driver chose."""
        import ray

        from replaystore.stream import ReplayStream, Shuffled, Source

        store = replaystore.open(uri, options)
        source = Source.from_store(store, "exemplars", columns=["sample_id"], version=version, sampler=Shuffled())
        stream = ReplayStream(source, batch_size=32, rank=rank, world_size=world, seed=7)
        ids = [int(i) for batch in stream for i in batch["sample_id"]]
        return ray.get_runtime_context().get_node_id(), ids

    return consume
