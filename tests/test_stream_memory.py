"""A stream or an SQL statement keeps freed buffers for reuse (glibc's thresholds and top pad raised
once per process), unless the user opts out or tuned malloc already: measured as page faults of a
real allocate-and-free cycle, in the main thread and in another one (its own arena)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from replaystore.memory import MMAP_THRESHOLD, TRIM_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent

# 8 MiB buffers allocated and freed, ten times: the minor page faults of one cycle. "main": four of
# them in the main thread; untuned, glibc trims the 32 MiB off its heap at each free and the next
# cycle faults it all in again. "thread": twelve in another thread, whose arena (heaps of 64 MiB, as
# a Lance decoding thread's) spills into a second heap that glibc unmaps once it is empty.
PROBE = """
import resource, sys, threading
import pyarrow as pa
import replaystore

if sys.argv[1] == "stream":
    from replaystore.stream import ReplayStream, Source

    ReplayStream(Source.from_arrow("t", pa.table({"x": [1, 2, 3]})), 2)
elif sys.argv[1] == "sql":
    replaystore.open(sys.argv[2]).sql("SELECT 1 AS one")
count = {"main": 4, "thread": 12}[sys.argv[3]]

def cycle():
    held = [bytearray(8 * 2**20) for _ in range(count)]
    del held

def measure():
    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)

if sys.argv[3] == "main":
    measure()
else:
    worker = threading.Thread(target=measure)
    worker.start()
    worker.join()
"""
PAGES = {"main": 4 * 8 * 2**20 // 4096, "thread": 12 * 8 * 2**20 // 4096}


def faults_per_cycle(reader: str, store: Path, where: str = "main", **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "REPLAYSTORE_MALLOC")}
    run = [sys.executable, "-c", PROBE, reader, str(store), where]
    out = subprocess.run(run, env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_a_reader_process_reuses_freed_buffers_unless_told_not_to_or_already_tuned(tmp_path: Path) -> None:
    pages = PAGES["main"]
    assert faults_per_cycle("nothing", tmp_path) > pages // 2, "glibc alone keeps nothing: the probe cannot tell"
    assert faults_per_cycle("stream", tmp_path) < pages // 20, "a stream's freed buffers went back to the kernel"
    assert faults_per_cycle("sql", tmp_path) < pages // 20, "an SQL statement's freed buffers went back to the kernel"
    assert faults_per_cycle("stream", tmp_path, REPLAYSTORE_MALLOC="default") > pages // 2, "the opt-out left malloc as it was"
    assert faults_per_cycle("stream", tmp_path, GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000") > pages // 2, "the user's own tuning stands"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the arenas are glibc's")
def test_a_decoding_threads_emptied_heaps_are_kept_for_its_next_buffers(tmp_path: Path) -> None:
    pages = PAGES["thread"]
    # with the thresholds alone (as before the top pad) the second heap still went back every cycle
    thresholds_only = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
    assert faults_per_cycle("nothing", tmp_path, "thread", GLIBC_TUNABLES=thresholds_only) > pages // 4, "the probe cannot tell"
    assert faults_per_cycle("stream", tmp_path, "thread") < pages // 20, "a thread's emptied heap went back to the kernel"
    assert faults_per_cycle("stream", tmp_path, "thread", MALLOC_TOP_PAD_="131072") > pages // 4, "the user's own top pad stands"
