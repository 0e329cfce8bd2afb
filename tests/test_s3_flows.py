"""The prune flow under Prefect's test harness against a store on S3, credentials from the environment."""

from __future__ import annotations

import numpy as np
import pytest
from s3_server import S3Server, s3_server  # noqa: F401 - fixture

import replaystore
from replaystore.flows.prune import prune


@pytest.mark.slow
def test_prune_flow_on_s3_enforces_budget_compacts_and_keeps_tags(
    prefect_harness: None,
    s3_server: S3Server,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3_server.env.items():  # the flow opens the store by URI only, as a deployment does
        monkeypatch.setenv(key, value)
    uri = f"s3://{s3_server.new_bucket()}/store"
    store = replaystore.open(uri)
    buffer = store.exemplars("digits", budget=10 * 64, selector="random", policy="fixed_total")
    for cls in range(2):
        buffer.add(cls, np.zeros((5, 64), dtype=np.uint8), sample_ids=np.arange(cls * 5, cls * 5 + 5))
    tagged = store.dataset("digits").version
    store.tag("digits", tagged, "before-shrink")
    extra = store.read("digits", filter="rank <= 3").to_pydict()
    extra.update(sample_id=[i + 100 for i in extra["sample_id"]], rank=[r + 5 for r in extra["rank"]])
    store.append("digits", extra)  # a plain append bypasses the budget: 16 rows over a 10-row budget
    assert store.count("digits") == 16
    fragments = store.info("digits").fragments

    summary = prune(store_uri=uri, buffers=["digits"], retention_hours=0.0)

    assert store.count("digits") == 10 and store.exemplars("digits").budget()["free_bytes"] == 0, "prune rebalanced"
    assert summary["exemplar budgets"]
    assert store.info("digits").fragments <= fragments
    assert {row["table"] for row in summary["cleanup"]} >= {"digits"}
    assert store.count("digits", version="before-shrink") == 10, "the tagged version survived cleanup on S3"
    assert next(v.version for v in store.versions("digits")) == tagged, "older untagged versions were removed"
