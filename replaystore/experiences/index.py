"""Indexes on the experiences table: which ones, with which parameters, and why.

Scalar indexes make the workspace/status prefilter and id lookups cheap; an inverted index serves
full-text and hybrid search; the vector index is only worth building once a table is large
(below `MIN_VECTOR_ROWS` LanceDB's exact flat scan is fast and exact). Rows appended after an
index was built are still found: LanceDB scans them flat until `build_index` rebuilds it.

The vector index defaults were chosen by measurement (`benchmarks/bench_retrieval.py` data, 1M ×
384-d clustered, compacted, index in memory; index search only, row ids, no filter, 200 queries,
2-core machine otherwise quiet; 2026-11-26):

    index        partitions  probes        p50 ms          recall@10         build s
    IVF_SQ       1000        10/12/16/20   2.26/2.27/2.52/2.73  .961/.967/.973/.975  42   <- 16
    IVF_SQ       500         6/8/10        2.45/2.67/2.89  .963/.971/.978    23
    IVF_SQ       250         4/8           2.69/4.05       .965/.977         24
    IVF_HNSW_SQ  100         4/8           2.07/2.39       .930/.930         186
    (earlier, search with prefilter: IVF_FLAT 12 probes 4.2-5.2 ms, .981, 1.5 GB of index cache
    against IVF_SQ's 0.38 GB; at 300k IVF_PQ 48 sub-vectors refine 10 .994 but 175 s to build)

Lance spends ~1.3-1.5 ms on any vector query (planning, opening the index) and ~0.06 ms per probed
partition of ~1,000 8-bit vectors, so IVF_SQ at ~1,000 rows per partition with 16 probes keeps
recall@10 ≥ 0.95 with margin at 2.5 ms. IVF_SQ's distances are approximate (similarity off by
~0.1), so `search` rescores its k hits with the full vectors it reads with their columns anyway:
`similarity` is exact. The prefilter by workspace and status adds ~0.8 ms at 1M rows (see
`ExperienceMemory.search` for when it is skipped).

Reading the k hits costs ~0.3 ms plus ~0.1 ms per column (Lance 2.1 decodes a block of each
column per hit): all 16 public columns and the embedding 2.1 ms, the 8 `RESULT_COLUMNS` 1.3 ms.
Formats: 2.1 has one slow case, a list column with no values at all in a compacted fragment
(tags never set: its all-null page is decoded whole, +1.3-2 ms per such column at 1M rows);
2.2 (pylance's default) has the mirror case for constant columns (one workspace, all active,
zero counters: 1.5-3 ms each at 1M rows), and 2.0 reads every column at ~0.35 ms. So
`schemas/experiences.json` creates the table in 2.1, and rows `distill` writes always carry tags
and source ids.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, cast

import lance

from replaystore.errors import ValidationError
from replaystore.retry import with_retries
from replaystore.schemas import Kind, load_spec
from replaystore.store import Store

MIN_VECTOR_ROWS = 10_000
ROWS_PER_PARTITION = 1_000
MIN_TRAINING_ROWS = 256  # fewer rows than this cannot train IVF partitions
VECTOR_INDEX_TYPES = ("IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT")


@dataclass(frozen=True)
class VectorIndexSpec:
    """How the `embedding` index is built and searched (LanceDB's knobs, measured defaults)."""

    index_type: str = "IVF_SQ"
    num_partitions: int | None = None  # None: about one per ROWS_PER_PARTITION rows
    nprobes: int = 16
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

    scalar = load_spec(Kind.EXPERIENCES).scalar_indexes  # the fields schemas/experiences.json marks "index"

    def create(column: str, kind: str) -> None:
        dataset().create_scalar_index(column, index_type=cast(Any, kind), replace=True)  # a name from the contract

    for column, kind in [*scalar.items(), *((c, "INVERTED") for c in TEXT_COLUMNS)]:
        with_retries(functools.partial(create, column, kind))
    rows = dataset().count_rows()
    want = rows >= max(min_vector_rows, 1) if vector is None else vector
    reason = None
    if want and rows < MIN_TRAINING_ROWS:
        want, reason = False, f"{rows} rows are too few to train IVF partitions (need ≥ {MIN_TRAINING_ROWS})"
    elif not want:
        reason = f"{rows} rows < min_vector_rows={min_vector_rows}: exact search is used" if vector is None else "vector=False"
    if want:
        with_retries(lambda: spec.create(dataset(), "embedding"))
    return IndexReport(rows, tuple(scalar), TEXT_COLUMNS, spec.index_type if want else None, reason, fragments)
