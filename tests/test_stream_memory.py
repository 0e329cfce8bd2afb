"""A stream or an SQL statement keeps freed buffers for reuse (glibc's thresholds raised once per
process), unless the user opts out or tuned malloc already: measured as page faults of a real
allocate-and-free cycle."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Four 8 MiB buffers allocated and freed, ten times: the minor page faults of one cycle. Untuned,
# glibc trims the 32 MiB off its heap at each free and the next cycle faults it all in again.
PROBE = """
import resource, sys
import pyarrow as pa
import replaystore

if sys.argv[1] == "stream":
    from replaystore.stream import ReplayStream, Source

    ReplayStream(Source.from_arrow("t", pa.table({"x": [1, 2, 3]})), 2)
elif sys.argv[1] == "sql":
    replaystore.open(sys.argv[2]).sql("SELECT 1 AS one")

def cycle():
    held = [bytearray(8 * 2**20) for _ in range(4)]
    del held

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""
PAGES = 4 * 8 * 2**20 // 4096


def faults_per_cycle(reader: str, store: Path, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "REPLAYSTORE_MALLOC")}
    run = [sys.executable, "-c", PROBE, reader, str(store)]
    out = subprocess.run(run, env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_a_reader_process_reuses_freed_buffers_unless_told_not_to_or_already_tuned(tmp_path: Path) -> None:
    assert faults_per_cycle("nothing", tmp_path) > PAGES // 2, "glibc alone keeps nothing: the probe cannot tell"
    assert faults_per_cycle("stream", tmp_path) < PAGES // 20, "a stream's freed buffers went back to the kernel"
    assert faults_per_cycle("sql", tmp_path) < PAGES // 20, "an SQL statement's freed buffers went back to the kernel"
    assert faults_per_cycle("stream", tmp_path, REPLAYSTORE_MALLOC="default") > PAGES // 2, "the opt-out left malloc as it was"
    assert faults_per_cycle("stream", tmp_path, GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000") > PAGES // 2, "the user's own tuning stands"
