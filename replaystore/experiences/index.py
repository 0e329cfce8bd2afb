"""Indexes on the experiences table: which ones, with which parameters, and why.

Scalar indexes make the workspace/status prefilter and id lookups cheap; an inverted index serves
full-text and hybrid search; the vector index is only worth building once a table is large
(below `MIN_VECTOR_ROWS` LanceDB's exact flat scan is fast and exact). Rows appended after an
index was built are still found: LanceDB scans them flat until `build_index` rebuilds it.

The vector index defaults were chosen by measurement (`benchmarks/bench_retrieval.py` data, 1M ×
384-d clustered, one workspace, prefiltered by workspace and status, index cache warm via
`ExperienceMemory.prewarm`; search only, ids + distance, 2-core machine shared with other jobs,
medians of interleaved runs; ~1,000 rows per partition):

    index          probes  p50 ms  p95 ms  recall@10  build s  index cache
    IVF_FLAT       12      4.2-5.2 5.4-6.3 0.981      71       1.5 GB
    IVF_SQ         12      3.0-3.7 3.6-6.7 0.965      52       0.38 GB
    IVF_SQ         20      4.4     7.7     0.974      52       0.38 GB   <- default
    IVF_SQ, refine 1  20   +0.9 ms (16 columns: p50 10.3 -> 11.2) 0.974
    IVF_SQ, refine 2  20   5.5     9.8     0.997      52       0.38 GB
    (cold cache: IVF_FLAT 12 probes p50 12 ms, IVF_SQ 6.6 ms; prefilter ~1-2 ms of each)

IVF_SQ scores 8-bit vectors, a quarter of IVF_FLAT's bytes per probed partition, so it is
faster and its cache 4× smaller, at ~1-2 points of recall; 20 probes keep recall@10 ≥ 0.95 with
margin. Its distances are approximate (similarity off by ~0.1 here), so `search` rescores its
k hits with the full vectors it reads with their columns anyway (what `refine_factor=1` did in
Lance, ~1 ms, now ~0.1 ms): `similarity` is exact. At 300k rows IVF_PQ (48 sub-vectors, refine
10) reached 0.994 but built in 175 s against 13 s, and IVF_HNSW_SQ (30 partitions, 4 probes,
ef 50) 0.981 in 141 s, neither faster than IVF_SQ there.

Reading the k hits' 16 public columns costs as much as the search. Lance file format 2.1 reads
them faster than 2.2 (pylance's default), so `schemas/experiences.json` creates the table in
2.1: end to end at 300k rows, compacted, interleaved runs, 2.1 p50 7.5-8.4 ms against 2.2
10.2-12.2 ms (load 1-2 on the shared 2 cores). One take by row id after the search beats one
search projecting the columns (6.9 against 8.8 ms at 300k).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lance

from replaystore.errors import ValidationError
from replaystore.retry import with_retries
from replaystore.store import Store

MIN_VECTOR_ROWS = 10_000
ROWS_PER_PARTITION = 1_000
VECTOR_INDEX_TYPES = ("IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT")


@dataclass(frozen=True)
class VectorIndexSpec:
    """How the `embedding` index is built and searched (LanceDB's knobs, measured defaults)."""

    index_type: str = "IVF_SQ"
    num_partitions: int | None = None  # None: about one per ROWS_PER_PARTITION rows
    nprobes: int = 20
    refine_factor: int | None = None  # >1: rescore k·refine candidates (search always rescores its k hits)
    num_sub_vectors: int | None = None  # PQ only
    ef: int | None = None  # HNSW only

    def __post_init__(self) -> None:
        if self.index_type not in VECTOR_INDEX_TYPES:
            raise ValidationError("index_type", f"must be one of {list(VECTOR_INDEX_TYPES)}, got {self.index_type!r}")
        for name in ("num_partitions", "nprobes", "refine_factor", "num_sub_vectors", "ef"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValidationError(name, f"must be a positive integer, got {value!r}")

    def partitions(self, rows: int) -> int:
        return self.num_partitions or max(1, min(4096, round(rows / ROWS_PER_PARTITION)))

    def create(self, ds: lance.LanceDataset, column: str) -> None:
        """Build (replace) the vector index on `column` with cosine distance."""
        kwargs: dict[str, Any] = {"num_partitions": self.partitions(ds.count_rows())}
        if "PQ" in self.index_type:
            dim = ds.schema.field(column).type.list_size
            kwargs["num_sub_vectors"] = self.num_sub_vectors or next(d for d in (48, 32, 24, 16, 8, 4, 2, 1) if dim % d == 0)
        ds.create_index(column, index_type=self.index_type, metric="cosine", replace=True, **kwargs)


@dataclass(frozen=True)
class IndexReport:
    """What `build_index` did, for logs and flow artifacts."""

    rows: int
    scalar: tuple[str, ...]
    full_text: tuple[str, ...]
    vector: str | None
    vector_skipped_reason: str | None
    fragments: tuple[int, int]  # before and after the compaction that precedes the indexes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALAR_INDEXES = {"experience_id": "BTREE", "workspace": "BITMAP", "status": "BITMAP"}
TEXT_COLUMNS = ("when_to_use", "content")


def build(
    store: Store,
    table: str,
    spec: VectorIndexSpec,
    min_vector_rows: int = MIN_VECTOR_ROWS,
    vector: bool | None = None,
) -> IndexReport:
    """Compact small fragments, then create the scalar, full-text and (when large enough, or
    `vector=True`) vector indexes.

    Every `add` appends a fragment, and a search reads its hits fragment by fragment: 100k rows
    in 500 fragments searched in 17 ms, compacted into one in 8 ms (compaction 2 s, index build 5 s).
    Compacting before indexing also spares remapping the indexes afterwards. Each step is one
    commit, retried on conflict with concurrent writers.
    """
    if not isinstance(min_vector_rows, int) or min_vector_rows < 0:
        raise ValidationError("min_vector_rows", f"must be a non-negative integer, got {min_vector_rows!r}")

    def dataset() -> lance.LanceDataset:
        return store.dataset(table)

    before = len(dataset().get_fragments())
    fragments = (before, store.compact(table)[table]["fragments_after"] if before > 1 else before)

    for column, kind in SCALAR_INDEXES.items():
        with_retries(lambda c=column, k=kind: dataset().create_scalar_index(c, index_type=k, replace=True))
    for column in TEXT_COLUMNS:
        with_retries(lambda c=column: dataset().create_scalar_index(c, index_type="INVERTED", replace=True))
    rows = dataset().count_rows()
    want = rows >= max(min_vector_rows, 1) if vector is None else vector
    reason = None
    if want and rows < 256:
        want, reason = False, f"{rows} rows are too few to train IVF partitions (need ≥ 256)"
    elif not want:
        reason = f"{rows} rows < min_vector_rows={min_vector_rows}: exact search is used" if vector is None else "vector=False"
    if want:
        with_retries(lambda: spec.create(dataset(), "embedding"))
    return IndexReport(rows, tuple(SCALAR_INDEXES), TEXT_COLUMNS, spec.index_type if want else None, reason, fragments)
