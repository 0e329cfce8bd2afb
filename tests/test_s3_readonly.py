"""A training job with read-only credentials on an object store (moto's S3 server on 127.0.0.1 with
IAM enforced): it streams, queries and retrieves; its writes fail in one line and change nothing."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
import requests
from test_readers import Words, exemplar_rows

import replaystore
from replaystore.errors import ReadOnlyError
from replaystore.stream import ReplayStream, Source

pytestmark = pytest.mark.slow
REGION = "us-east-1"
READ_ONLY = ["s3:GetObject", "s3:ListBucket"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[dict[str, Any]]:
    """A moto server of its own (IAM enforcement is process-wide), a bucket, and two identities:
    `rw` (s3:*) and `ro` (s3:GetObject, s3:ListBucket only). Users, keys and the bucket are made
    while moto still lets every request through; then `/moto-api/reset-auth` 0 (what the env var
    INITIAL_NO_AUTH_ACTION_COUNT=0 sets at start) makes it check every request's signature and policy."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # start-up: until the port answers (or the process died)
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=5)
                break
            except requests.ConnectionError:
                assert server.poll() is None, "moto server exited"
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup", region_name=REGION)
        keys = {}
        for user, actions in (("rw", ["s3:*"]), ("ro", READ_ONLY)):
            iam.create_user(UserName=user)
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "aws_endpoint": endpoint, "allow_http": "true", "region": REGION,
                "aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"],
            }  # fmt: skip
        rw = boto3.client(
            "s3", endpoint_url=endpoint, region_name=REGION,
            aws_access_key_id=keys["rw"]["aws_access_key_id"], aws_secret_access_key=keys["rw"]["aws_secret_access_key"],
        )  # fmt: skip
        rw.create_bucket(Bucket="readers")
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=30).raise_for_status()
        yield {"uri": "s3://readers/store", "rw": keys["rw"], "ro": keys["ro"], "client": rw}
    finally:
        server.terminate()
        server.wait()


def _state(store: replaystore.Store, client: Any) -> tuple[dict[str, Any], list[str]]:
    tables = {t: (store.versions(t), store.tags(t)) for t in store.table_names()}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="readers")
    return tables, sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_read_only_credentials_stream_query_and_retrieve_and_cannot_write(iam_s3: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    writer = replaystore.open(iam_s3["uri"], iam_s3["rw"])
    writer.append("exemplars", exemplar_rows(40))
    writer.experiences("experiences", embedder=Words()).upsert(
        [{"when_to_use": "when a job only reads", "content": "give it read-only keys"}, {"when_to_use": "tests flaky", "content": "no clocks"}]
    )
    with pytest.raises(ReadOnlyError):  # the policy is enforced: the read-only identity cannot write
        replaystore.open(iam_s3["uri"], iam_s3["ro"]).append("exemplars", exemplar_rows(1, 1000))
    before = _state(writer, iam_s3["client"])

    reader = replaystore.open(iam_s3["uri"], iam_s3["ro"])
    with caplog.at_level(logging.WARNING, logger="replaystore"):
        stream = ReplayStream(Source.from_store(reader, "exemplars", columns=["sample_id", "class_id"]), 16)
        ids = [int(i) for batch in stream for i in batch["sample_id"]]
    assert sorted(ids) == list(range(40))
    warnings = [r.getMessage() for r in caplog.records if r.name == "replaystore"]
    assert len(warnings) == 1 and "not protected from cleanup" in warnings[0]
    unpinned = ReplayStream(Source.from_store(reader, "exemplars", columns=["sample_id"], pin=False), 16)
    assert sum(len(b["sample_id"]) for b in unpinned) == 40 and len(caplog.records) == 1

    counts = reader.sql("SELECT class_id, COUNT(*) AS n FROM exemplars GROUP BY class_id ORDER BY class_id")
    assert counts["n"].to_list() == [14, 13, 13]
    memory = reader.experiences("experiences", embedder=Words())
    hits = memory.retrieve("a job that only reads", k=1, record=False)
    assert hits["content"].to_pylist() == ["give it read-only keys"]
    assert memory.search(np.asarray(Words().embed(["flaky tests"])[0]), "default", k=2).num_rows == 2

    with pytest.raises(ReadOnlyError) as err:
        reader.append("exemplars", exemplar_rows(2, 100))
    assert "\n" not in str(err.value) and "cannot write table 'exemplars'" in str(err.value)
    assert _state(writer, iam_s3["client"]) == before
    assert reader.count("exemplars") == 40
