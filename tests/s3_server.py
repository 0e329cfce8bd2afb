"""A real S3 API on the loopback interface for the tests: moto's threaded server from PyPI.

Import the fixtures into a test module (`from s3_server import s3_server, s3_store`). Credentials
and the endpoint reach Lance only as storage options (or, in `s3_env`, environment variables);
nothing is written into files.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

import replaystore

ACCESS_KEY = "replaystore-test-key"
SECRET_KEY = "replaystore-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and the options a store needs to reach it."""

    endpoint: str

    @property
    def storage_options(self) -> dict[str, str]:
        return {
            "aws_endpoint": self.endpoint,
            "allow_http": "true",
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region": REGION,
        }

    @property
    def env(self) -> dict[str, str]:
        """The same settings as the environment variables Lance's object store reads."""
        return {f"AWS_{key.removeprefix('aws_').upper()}": value for key, value in self.storage_options.items()}

    def client(self):  # noqa: ANN201 - boto3 clients are untyped
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def new_bucket(self) -> str:
        """A fresh bucket per test, so tests never see each other's tables."""
        bucket = f"rs-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def objects(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server: S3Server) -> replaystore.Store:
    """A fresh store under its own bucket on the loopback S3 server."""
    return replaystore.open(f"s3://{s3_server.new_bucket()}/store", s3_server.storage_options)
