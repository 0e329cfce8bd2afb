"""Retrieval of experiences: top-5 from 1,000,000 × 384-d vectors (scale 1.0), ANN vs brute force.

Peer: a numpy brute-force scan (matrix-vector product + argpartition over the whole matrix in
RAM), measured in the same run on the same vectors and queries. Ours: `ExperienceMemory.search`
with its defaults: one workspace holding every row (so the hits are checked against the scope
instead of prefiltering: see `search`), the default result columns (`RESULT_COLUMNS`; also
reported: all 16 columns, and the prefiltered path that a `where` or a smaller workspace takes),
through the vector index `build_index` makes with the default `VectorIndexSpec` (IVF_SQ, ~1,000
rows per partition, 16 probes, exact rescoring of the hits; why: `replaystore/experiences/index.py`)
on the table `build_index` compacted first, in Lance file format 2.1 (`schemas/experiences.json`).
The first search loads the indexes into the search cache (`auto_prewarm`); it is timed on its own
and the steady-state latencies exclude it, as a long-running service sees them; recall@10 is
against the exact answer.

Vectors are clustered like sentence embeddings, not uniform noise: topics with sub-topics whose
points vary inside a low-rank subspace per topic (sentence embeddings have an intrinsic dimension
of a few tens), plus a little isotropic noise, unit-normalised. Sub-topic sizes are heavy-tailed.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

import replaystore
from benchmarks.common import Result, cli, timer
from replaystore.experiences import ExperienceMemory, VectorIndexSpec

DIM = 384
FULL_ROWS = 1_000_000
RANK = 24
NOISE = 0.25
QUERIES = 200
CHUNK = 100_000


def clustered_embeddings(n: int, dim: int = DIM, queries: int = QUERIES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit vectors and `queries` unit query vectors drawn from the same clustered distribution."""
    rng = np.random.default_rng(seed)
    topics = max(16, n // 10_000)
    subtopics = max(64, n // 500)
    center = rng.standard_normal((topics, dim), dtype=np.float32)
    basis = rng.standard_normal((topics, RANK, dim), dtype=np.float32) / np.sqrt(RANK)
    topic_of = rng.integers(0, topics, subtopics)
    offsets = rng.standard_normal((subtopics, RANK), dtype=np.float32)
    sub = center[topic_of] + 0.6 * np.einsum("sr,srd->sd", offsets, basis[topic_of])
    weight = rng.pareto(1.5, subtopics) + 1.0
    weight /= weight.sum()

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, CHUNK):
            stop = min(count, start + CHUNK)
            label = rng.choice(subtopics, stop - start, p=weight)
            x = sub[label] + NOISE * rng.standard_normal((stop - start, dim), dtype=np.float32)
            topic = topic_of[label]
            for t in np.unique(topic):  # within-topic variation lies in the topic's subspace
                rows = np.nonzero(topic == t)[0]
                x[rows] += 0.5 * rng.standard_normal((len(rows), RANK), dtype=np.float32) @ basis[t]
            out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(queries)


class PrecomputedVectors:
    """The benchmark searches with vectors it generated; nothing here embeds text."""

    name = "precomputed"
    dim = DIM

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError("bench_retrieval searches with precomputed vectors")


KINDS = ("success", "failure", "comparative", "insight")
TOOLS = ("search", "python", "shell", "browser", "sql")


def load(store: replaystore.Store, vectors: np.ndarray) -> None:
    """Append the vectors as experiences of one workspace, a fragment per chunk.

    The other columns look like what `distill` writes: every lesson has its kind, tags (kind and
    a tool) and the trajectory it came from. (A list column with no values at all in a compacted
    fragment is a slow case of Lance 2.1's take: ~2 ms per such column at 1M rows; see index.py.)
    """
    for start in range(0, len(vectors), CHUNK):
        part = vectors[start : start + CHUNK]
        ids = range(start, start + len(part))
        store.append(
            "experiences",
            {
                "experience_id": [uuid.UUID(int=i).hex for i in ids],
                "workspace": ["bench"] * len(part),
                "kind": [KINDS[i % 4] for i in ids],
                "when_to_use": [f"scenario {i}" for i in ids],
                "content": [f"lesson {i}" for i in ids],
                "tags": [[KINDS[i % 4], TOOLS[i % 5]] for i in ids],
                "source_ids": [[f"task-{i // 3}"] for i in ids],
                "confidence": [(i % 10) / 10 for i in ids],
                "embedding": part,
            },
            params={"embedding_dim": DIM},
        )


def brute_force(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = data @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def latencies(fn: Any, queries: np.ndarray) -> np.ndarray:
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - start)
    return np.array(out[3:]) * 1e3  # first calls warm caches


def run(scale: float = 1.0, spec: VectorIndexSpec | None = None) -> list[Result]:
    n = max(1_000, int(FULL_ROWS * scale))
    case = f"{n:,} x {DIM}-d, top-5"
    with timer() as gen_time:
        data, queries = clustered_embeddings(n)
    truth = np.stack([brute_force(data, q, 10) for q in queries])
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as root:
        store = replaystore.open(root)
        load(store, data)
        memory = ExperienceMemory(store, embedder=PrecomputedVectors(), index=spec)
        rid = {uuid.UUID(int=i).hex: i for i in range(n)}
        exact = latencies(lambda q: memory.search(q, "bench", k=5), queries[:6])  # slow at scale: a few
        with timer() as build_time:
            report = memory.build_index(vector=True)
        with timer() as first_time:
            memory.search(queries[0], "bench", k=5)  # loads the indexes (auto_prewarm)
        ann = latencies(lambda q: memory.search(q, "bench", k=5), queries)
        every = latencies(lambda q: memory.search(q, "bench", k=5, columns="all"), queries[:100])
        filtered = latencies(lambda q: memory.search(q, "bench", k=5, where="workspace = 'bench'"), queries[:100])
        found = [[rid[e] for e in memory.search(q, "bench", k=10)["experience_id"].to_pylist()] for q in queries]
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    numpy_ms = latencies(lambda q: brute_force(data, q, 5), queries)
    chosen = memory.index
    params = f"{report.vector} partitions={chosen.partitions(n)} nprobes={chosen.nprobes} refine={chosen.refine_factor}"
    top1 = float(np.mean([data[t[0]] @ q for t, q in zip(truth, queries)]))
    notes = f"{params}; fragments {report.fragments[0]}->{report.fragments[1]}; data generated in {gen_time():.1f}s; mean top-1 cosine {top1:.2f}"
    peer = "numpy brute-force scan"
    return [
        Result("retrieval", case, "p50 latency (ms)", float(np.percentile(ann, 50)), float(np.percentile(numpy_ms, 50)), peer, False, "≤ 5 ms", notes),
        Result("retrieval", case, "p95 latency (ms)", float(np.percentile(ann, 95)), float(np.percentile(numpy_ms, 95)), peer, False, "≤ 15 ms", notes),
        Result("retrieval", case, "recall@10", recall, 1.0, peer, True, "≥ 0.95", notes),
        Result(
            "retrieval", case, "p50 latency (ms), all 16 columns", float(np.percentile(every, 50)), float(np.percentile(numpy_ms, 50)), peer, False, "", notes
        ),
        Result(
            "retrieval",
            case,
            "p50 latency (ms), prefiltered (where=)",
            float(np.percentile(filtered, 50)),
            float(np.percentile(numpy_ms, 50)),
            peer,
            False,
            "",
            "bitmap-index prefilter: the path of a workspace holding < 90% of the rows",
        ),
        Result("retrieval", case, "index build (s)", build_time(), None, "none (numpy needs no index)", False, "", params),
        Result("retrieval", case, "first search after build (ms)", first_time() * 1e3, None, "none", False, "", "includes loading the indexes"),
        Result(
            "retrieval",
            case,
            "exact search p50 (ms), no index",
            float(np.percentile(exact, 50)),
            float(np.percentile(numpy_ms, 50)),
            peer,
            False,
            "",
            "LanceDB flat scan from disk",
        ),
    ]


if __name__ == "__main__":
    cli(run)
