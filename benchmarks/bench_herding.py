"""Herding: pick 500 exemplars from 50,000 candidates with 512-d features (scale 1.0), ours vs PyCIL-style numpy.

Peer: the straightforward PyCIL loop (normalise, then for each pick build `(vectors + S) / k` for
every candidate, take the nearest to the class mean, `np.delete` it), which took 73 s here.
Ours: `replaystore.exemplars.herding_order`, one torch mat-vec per pick, on one thread (its
default, like the numpy loop) and on torch's default threads. Each run is in a fresh
spawned process on the same features, so each one's peak resident memory above the loaded
features is its own; the picks must be identical. Candidates and picks scale with `scale`
(time grows with scale²); the feature width stays 512.

Features look like a CNN's penultimate layer for one class: ReLU of a shared class direction
plus per-sample variation.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result, cli

FULL_CANDIDATES = 50_000
FULL_PICKS = 500
DIM = 512
EPSILON = 1e-8


def class_features(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim, dtype=np.float32)
    return np.maximum(direction + 1.5 * rng.standard_normal((n, dim), dtype=np.float32), 0)


def pycil_herding(features: np.ndarray, m: int) -> np.ndarray:
    """PyCIL's `_construct_exemplar` loop, kept as written there (float32 numpy), returning original indices."""
    vectors = (features.T / (np.linalg.norm(features.T, axis=0) + EPSILON)).T
    class_mean = np.mean(vectors, axis=0)
    index = np.arange(len(vectors))
    selected: list[int] = []
    exemplar_vectors: list[np.ndarray] = []
    for k in range(1, m + 1):
        S = np.sum(exemplar_vectors, axis=0)
        mu_p = (vectors + S) / k
        i = np.argmin(np.sqrt(np.sum((class_mean - mu_p) ** 2, axis=1)))
        selected.append(int(index[i]))
        exemplar_vectors.append(np.array(vectors[i]))
        vectors = np.delete(vectors, i, axis=0)
        index = np.delete(index, i, axis=0)
    return np.array(selected)


def _ours(features: np.ndarray, m: int, threads: int | None = 1) -> np.ndarray:
    from replaystore.exemplars import herding_order

    return herding_order(features, m, threads=threads)


def _measure(which: str, path: str, m: int, threads: int | None, out: mp.Queue) -> None:
    """In a fresh process: load the features, then time one method and its peak RSS above that."""
    features = np.load(path)
    method = pycil_herding if which == "pycil" else lambda f, k: _ours(f, k, threads)
    if which == "ours":
        method(features[:10], 1)  # import torch and warm its kernels before the clock starts
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    picks = method(features, m)
    seconds = time.perf_counter() - start
    out.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before, picks))


def _in_fresh_process(which: str, path: str, m: int, threads: int | None = None) -> tuple[float, int, np.ndarray]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(which, path, m, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run(scale: float = 1.0) -> list[Result]:
    n = max(10, int(FULL_CANDIDATES * scale))
    m = max(1, int(FULL_PICKS * scale))
    features = class_features(n)
    case = f"{m} of {n:,} x {DIM}"
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "features.npy")
        np.save(path, features)
        ours_s, ours_mem, ours_picks = _in_fresh_process("ours", path, m, threads=1)
        multi_s, _, multi_picks = _in_fresh_process("ours", path, m, threads=None)
        peer_s, peer_mem, peer_picks = _in_fresh_process("pycil", path, m)
    same = float(np.mean((ours_picks == peer_picks) & (multi_picks == peer_picks)))
    matrix = features.nbytes
    load = f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (mat-vecs are memory-bound: contention hurts)"
    return [
        Result(
            "herding",
            case,
            "seconds",
            ours_s,
            peer_s,
            "PyCIL-style numpy herding",
            False,
            "≤ 3 s at scale 1",
            f"default: one torch thread, one mat-vec per pick vs building (vectors + S)/k and np.delete per pick; {load}",
        ),
        Result(
            "herding",
            f"{case}, torch's default threads",
            "seconds",
            multi_s,
            peer_s,
            "PyCIL-style numpy herding",
            False,
            "≤ 3 s at scale 1",
            f"herding_order(threads=None): a fork-join per pick; {load}",
        ),
        Result(
            "herding",
            case,
            "peak extra memory (× the N×D features)",
            ours_mem / matrix,
            peer_mem / matrix,
            "PyCIL-style numpy herding",
            False,
            "O(N·D): a small multiple, never N×N",
            f"N×D float32 = {matrix / 2**20:.0f} MiB; an N×N float32 matrix would be {n * n * 4 / 2**30:.1f} GiB",
        ),
        Result("herding", case, "picks equal to the reference (fraction)", same, 1.0, "PyCIL-style numpy herding", True, "1.0"),
    ]


if __name__ == "__main__":
    cli(run)
