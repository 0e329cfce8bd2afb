"""ReMe procedural memory in a store table: add with dedup, retrieve, count uses, refine, distill.

Every operation is a Store write (validated against `schemas/experiences.json`, retried on commit
conflicts). An add plans its dedup on one version and commits only onto that version
(`Store.atomically`), so concurrent processes, on any machine, never add the same lesson twice;
counters are single Lance updates, which Lance re-applies to the latest version on a conflict,
so no increment is lost; refine archives exactly the rows its rule picked in the version it read. Vector search goes through pylance, text and
hybrid search through LanceDB, on the same table.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replaystore import schemas
from replaystore.checks import is_finite_number
from replaystore.errors import NotFoundError, ValidationError
from replaystore.experiences import index as indexes
from replaystore.experiences.embedder import Embedder, default_embedder
from replaystore.experiences.extractors import Extractor, RuleExtractor, as_trajectory, group
from replaystore.experiences.sql import check_predicate
from replaystore.predicates import NOW, in_list, increments, literal
from replaystore.schemas import Kind
from replaystore.store import Edit, Store

MODES = ("vector", "text", "hybrid")
HIDDEN = ("embedding", "dedup_embedding")
DEDUP_CANDIDATES = 4  # nearest stored rows LanceDB proposes per candidate; all are rescored in float64
SEARCH_INDEXED = {"embedding", "workspace", "status"}  # the indexes a vector search reads
RESULT_COLUMNS = ("experience_id", "kind", "when_to_use", "content", "tags", "score", "freq", "utility")
POSTFILTER_SHARE = 0.9  # workspace share of the rows above which a search checks its hits instead of prefiltering
SHARE_RECOUNT_VERSIONS = 100
DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True)
class Skipped:
    """A candidate `add` left out: its position in the input, and the experience it duplicates."""

    index: int
    when_to_use: str
    duplicate_of: str
    similarity: float


@dataclass(frozen=True)
class AddReport:
    added: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    version: int | None = None


@dataclass(frozen=True)
class DistillReport:
    """Candidates the extractor wrote, those validation rejected (with scores), and the add."""

    candidates: int
    rejected: list[dict[str, Any]]
    added: list[str]
    skipped: list[Skipped]


def _rows(data: Any) -> list[dict[str, Any]]:
    """Rows as dicts from anything `schemas.to_columns` reads (list of dicts, Arrow, columns)."""
    if isinstance(data, Mapping) and "when_to_use" in data and isinstance(data["when_to_use"], str):
        data = [data]
    columns = schemas.to_columns(data)
    values = {k: v.to_pylist() if hasattr(v, "to_pylist") else list(v) for k, v in columns.items()}
    n = len(next(iter(values.values()), []))
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _text(row: Mapping[str, Any], name: str, index: int) -> str:
    value = row.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__} at row {index}")
    return value


def _check_ids(ids: Any) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence) or not all(isinstance(i, str) and i for i in ids):
        raise ValidationError("ids", "must be a list of non-empty experience id strings")
    return list(ids)


def _check_workspace(workspace: Any) -> str:
    if not isinstance(workspace, str) or not workspace:
        raise ValidationError("workspace", f"must be a non-empty string, got {workspace!r}")
    return workspace


def _unit64(vectors: np.ndarray) -> np.ndarray:
    """float32 vectors as float64 unit vectors: the one precision dedup compares at."""
    v = np.asarray(vectors, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), np.finfo(np.float64).tiny)


def _cosines(queries: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Row-wise dot products of unit vectors: each pair computed alike wherever it comes from."""
    return np.einsum("ij,ij->i", np.ascontiguousarray(queries), np.ascontiguousarray(others))


class ExperienceMemory:
    """The experiences table of a store, with its embedder, dedup threshold and index settings.

    `Store.experiences(table, **settings)` builds one. The embedder decides the vector dimension;
    a table created with another dimension is refused rather than silently mixed.
    `auto_prewarm` (default on): the first search that meets a new search index loads it into
    memory (see `prewarm`), so a long-running service is fast from its first queries on.
    """

    def __init__(
        self,
        store: Store,
        table: str = Kind.EXPERIENCES.value,
        embedder: Embedder | None = None,
        dedup_threshold: float = 0.5,
        index: indexes.VectorIndexSpec | None = None,
        auto_prewarm: bool = True,
    ) -> None:
        if not is_finite_number(dedup_threshold) or not -1.0 <= dedup_threshold <= 1.0:
            raise ValidationError("dedup_threshold", f"must be a cosine similarity in [-1, 1], got {dedup_threshold!r}")
        self.store = store
        self.table = table
        self.embedder = embedder or default_embedder()
        self.dedup_threshold = float(dedup_threshold)
        self.index = index or indexes.VectorIndexSpec()
        if not isinstance(auto_prewarm, bool):
            raise ValidationError("auto_prewarm", f"must be a bool, got {auto_prewarm!r}")
        self.auto_prewarm = auto_prewarm
        self._warm_uuids: set[str] = set()
        self._warm_version: int | None = None
        self._shares: dict[str, tuple[float, int]] = {}  # workspace -> (share of rows, version counted)
        self._ds: lance.LanceDataset | None = None  # kept open across searches (see _dataset)
        dim = self.store.table(table, create=Kind.EXPERIENCES, params={"embedding_dim": self.embedder.dim}).schema.field("embedding").type.list_size
        if dim != self.embedder.dim:
            raise ValidationError("embedding", f"embedder {self.embedder.name!r} gives {self.embedder.dim}-d vectors but table '{table}' stores {dim}-d")

    def __repr__(self) -> str:
        return f"ExperienceMemory({self.store.uri!r}, table={self.table!r}, dim={self.embedder.dim})"

    @cached_property
    def _columns(self) -> list[str]:
        """Every column except the embeddings: what results and `get` return."""
        return [n for n in self.store.schema(self.table).names if n not in HIDDEN]

    @cached_property
    def _lance(self) -> Any:
        """The table through LanceDB, opened on first search (counter-only processes skip the import).

        `read_consistency_interval=0`: every query sees the latest version other writers committed.
        """
        import lancedb

        db = lancedb.connect(self.store.uri, storage_options=self.store.storage_options or None, read_consistency_interval=timedelta(0))
        return db.open_table(self.table)

    # -- add ----------------------------------------------------------------------------------

    def add(self, experiences: Any, workspace: str | None = None) -> AddReport:
        """Embed and append experiences, skipping near-duplicates of active ones in their workspace.

        A candidate is a duplicate when the cosine similarity of its `when_to_use + " " + content`
        embedding to an existing active experience of its workspace, or to one added earlier in the
        same call, is above `dedup_threshold`. Rows may carry any schema column except the two
        embeddings, which the memory computes.
        """
        rows = _rows(experiences)
        if not rows:
            return AddReport()
        target = self.store.table(self.table)
        table = self._prepare(rows, workspace, target.schema)
        dedup = table["dedup_embedding"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, self.embedder.dim)

        def plan(ds: lance.LanceDataset) -> tuple[Edit | None, tuple[list[Skipped], np.ndarray]]:
            # LanceDB sees the latest version: the one planned on, or a newer one that refuses the commit
            skipped = self._duplicates(table, dedup, stored=ds.count_rows() > 0)
            keep = np.ones(len(rows), dtype=bool)
            keep[[s.index for s in skipped]] = False
            return (Edit(insert=table.filter(pa.array(keep))) if keep.any() else None), (skipped, keep)

        committed, (skipped, keep) = target.atomically(plan)
        version = committed if keep.any() else None
        added = [i for i, k in zip(table["experience_id"].to_pylist(), keep) if k]
        return AddReport(added, skipped, version)

    def upsert(self, experiences: Any, workspace: str | None = None) -> int:
        """Insert or replace experiences by `experience_id` in one commit, without dedup (imports)."""
        rows = _rows(experiences)
        target = self.store.table(self.table)
        return target.merge(self._prepare(rows, workspace, target.schema), on="experience_id") if rows else target.version

    def _prepare(self, rows: list[dict[str, Any]], workspace: str | None, schema: pa.Schema) -> pa.Table:
        """Check texts, fill ids/kind/workspace, embed both texts, and conform to the schema."""
        for i, row in enumerate(rows):
            for name in HIDDEN:
                if name in row:
                    raise ValidationError(name, f"is computed by the memory's embedder; do not pass it (row {i})")
            wtu, content = _text(row, "when_to_use", i), _text(row, "content", i)
            if not wtu.strip() and not content.strip():
                raise ValidationError("content", f"an experience needs when_to_use or content (row {i} has neither)")
            row["when_to_use"], row["content"] = wtu, content
            row["workspace"] = _check_workspace(row.get("workspace") or workspace or DEFAULT_WORKSPACE)
            row["experience_id"] = row.get("experience_id") or uuid.uuid4().hex
            row["kind"] = row.get("kind") or "insight"
            if isinstance(row.get("metadata"), Mapping):
                row["metadata"] = json.dumps(row["metadata"], sort_keys=True, default=str)
        texts = [r["when_to_use"] if r["when_to_use"].strip() else r["content"] for r in rows]
        dedup_texts = [f"{r['when_to_use']} {r['content']}".strip() for r in rows]
        vectors = self.embedder.embed(texts + dedup_texts)
        columns: dict[str, Any] = {k: [r.get(k) for r in rows] for k in set().union(*rows)}
        columns |= {"embedding": vectors[: len(rows)], "dedup_embedding": vectors[len(rows) :]}
        return schemas.conform(columns, schema)

    def _duplicates(self, table: pa.Table, dedup: np.ndarray, stored: bool) -> list[Skipped]:
        """Candidates too similar to an active stored experience or an earlier kept candidate.

        One rule at one precision: LanceDB only proposes the nearest stored rows; every similarity
        compared with the threshold, to stored rows and to candidates of the same call alike, is
        `cosine` of the float32 vectors computed in float64.
        """
        ids = table["experience_id"].to_pylist()
        workspaces = table["workspace"].to_pylist()
        nearest: dict[int, tuple[str, float]] = {}
        for ws in set(workspaces) if stored else ():
            rows = [i for i, w in enumerate(workspaces) if w == ws]
            hits = (
                self._lance.search(dedup[rows], vector_column_name="dedup_embedding")
                .distance_type("cosine")
                .where(f"workspace = {literal(ws)} AND status = 'active'", prefilter=True)
                .select(["experience_id", "dedup_embedding"])
                .limit(DEDUP_CANDIDATES)
                .to_arrow()
            )
            if not hits.num_rows:
                continue
            qi = hits["query_index"].to_numpy() if "query_index" in hits.column_names else np.zeros(hits.num_rows, int)
            near = hits["dedup_embedding"].combine_chunks().flatten().to_numpy().reshape(hits.num_rows, -1)
            queries = np.asarray([rows[int(q)] for q in qi])
            sims = _cosines(_unit64(dedup[queries]), _unit64(near))
            for i, eid, sim in zip(queries, hits["experience_id"].to_pylist(), sims):
                if sim > nearest.get(int(i), ("", -np.inf))[1]:
                    nearest[int(i)] = (eid, float(sim))
        skipped: list[Skipped] = []
        kept: list[int] = []
        unit = _unit64(dedup)
        for i in range(len(ids)):
            best = nearest.get(i, ("", -np.inf))
            same = [j for j in kept if workspaces[j] == workspaces[i]]
            if same:
                sims = _cosines(np.repeat(unit[i : i + 1], len(same), axis=0), unit[same])
                if sims.max() > best[1]:
                    best = (ids[same[int(np.argmax(sims))]], float(sims.max()))
            if best[1] > self.dedup_threshold:
                skipped.append(Skipped(i, table["when_to_use"][i].as_py(), best[0], best[1]))
            else:
                kept.append(i)
        return skipped

    # -- retrieve -----------------------------------------------------------------------------

    def _scope(self, workspace: str, where: str | None) -> str:
        """The workspace and active-status conditions, ANDed with a checked user filter."""
        parts = [f"workspace = {literal(_check_workspace(workspace))}", "status = 'active'"]
        if where is not None:
            parts.append(f"({check_predicate(where)})")
        return " AND ".join(parts)

    def _dataset(self) -> lance.LanceDataset:
        """The table at its latest version, from one dataset kept open across searches.

        Reopening per search would start a fresh Lance session each time and reload the vector
        index's centroids and partition metadata; `checkout_version` keeps the session's caches.
        """
        if self._ds is None:
            self._ds = self.store.dataset(self.table)
        elif (latest := self._ds.latest_version) != self._ds.version:
            self._ds = self._ds.checkout_version(latest)
        return self._ds

    def prewarm(self, ds: lance.LanceDataset | None = None) -> list[str]:
        """Load the vector index and the workspace/status prefilter indexes into the search cache now.

        Otherwise each IVF partition is read from disk the first time a query probes it (~5 ms per
        query at 1M rows until most partitions were touched). Costs memory: ~0.38 GB at 1M rows
        for IVF_SQ (1.5 GB for IVF_FLAT) and ~0.5 s once (bench_retrieval, 1M rows). Indexes already
        loaded by this memory (same index uuid) are skipped: prewarming them again costs ~0.1 s.
        Returns the names of the indexes loaded. `ds`: the version a search already resolved.
        """
        ds = ds or self._dataset()
        todo = [d for d in ds.describe_indices() if set(d.field_names) & SEARCH_INDEXED and {s.uuid for s in d.segments} - self._warm_uuids]
        for index in todo:
            ds.prewarm_index(index.name)
            self._warm_uuids |= {s.uuid for s in index.segments}
        self._warm_version = ds.version
        return [d.name for d in todo]

    def search(self, vector: np.ndarray, workspace: str, k: int = 5, where: str | None = None, columns: Sequence[str] | str | None = None) -> pa.Table:
        """Top-k active experiences of `workspace` by cosine similarity to `vector`; read-only.

        `columns`: what each hit carries besides `similarity`: by default `RESULT_COLUMNS` (what
        an agent needs to use, rank and count a lesson), "all" for every public column, or a list.
        Each column read costs ~0.1 ms of the search (Lance decodes a block per column and hit):
        the default reads 8 of the 16 (at 1M rows 1.3 against 2.1 ms). `get(ids)` gives the rest.

        Exact (flat) while the table has no vector index; through it with the memory's
        `nprobes`/`refine_factor`/`ef` once `build_index` made one. Goes through pylance, not
        LanceDB: its query builder and per-query consistency check cost more than the search.
        The search returns row ids only; one take then reads the hits' columns and full
        embeddings, which rescore them exactly (`similarity` = cosine similarity, hits in its
        order): cheaper than one search projecting the columns (Lance reads each projected
        column of the hits separately there).

        Filtering: Lance's prefilter builds the mask of the workspace's active rows first (~0.8 ms
        at 1M rows). When the workspace holds nearly every row of the table (`_share`) and there
        is no `where`, an unfiltered search for slightly more than k hits is checked against the
        scope instead; if fewer than k of them are in scope, the prefiltered search runs after
        all. Both give the same hits: the first k in-scope rows of the index's order.
        """
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.embedder.dim,):
            raise ValidationError("vector", f"must have shape ({self.embedder.dim},), got {vector.shape}")
        k, workspace, scope = self._k(k), _check_workspace(workspace), self._scope(workspace, where)
        wanted = self._result_columns(columns)
        ds = self._dataset()  # one check for a newer version per search
        if self.auto_prewarm and ds.version != self._warm_version:  # new version: maybe a new index
            self.prewarm(ds)
        share = self._share(ds, workspace) if where is None else 0.0
        if share >= POSTFILTER_SHARE:
            fetch = k if share == 1.0 else math.ceil(k / share) + 1
            rows = self._take(ds, self._nearest(ds, vector, fetch, None), [*wanted, "workspace", "status"])
            keep = [w == workspace and st == "active" for w, st in zip(rows["workspace"].to_pylist(), rows["status"].to_pylist())]
            if sum(keep) >= k or rows.num_rows < fetch:  # fewer than fetch: the search saw every candidate
                return self._rescored((rows if all(keep) else rows.filter(pa.array(keep))).slice(0, k), vector, wanted)
        return self._rescored(self._take(ds, self._nearest(ds, vector, k, scope), wanted), vector, wanted)

    def _result_columns(self, columns: Sequence[str] | str | None) -> list[str]:
        if columns == "all":
            return list(self._columns)
        if columns is not None and (isinstance(columns, str) or not isinstance(columns, Sequence) or not columns):
            raise ValidationError("columns", f"must be None, 'all' or a non-empty list of column names, got {columns!r}")
        wanted = list(RESULT_COLUMNS if columns is None else dict.fromkeys(columns))
        unknown = [c for c in wanted if c not in self._columns]
        if unknown:
            self.store.require_columns(self.table, unknown)  # a table with an older schema: name the migrate command
            raise ValidationError("columns", f"unknown column(s) {unknown}: choose from {self._columns}")
        return wanted

    def _share(self, ds: lance.LanceDataset, workspace: str) -> float:
        """The fraction of the table's rows that are active rows of `workspace`: a hint for the
        filter strategy only, so it is counted (~1 ms at 1M rows) at most once every
        `SHARE_RECOUNT_VERSIONS` versions (each retrieve's freq count is a version)."""
        known = self._shares.get(workspace)
        if known is None or not 0 <= ds.version - known[1] < SHARE_RECOUNT_VERSIONS:
            total = ds.count_rows()
            known = (ds.count_rows(self._scope(workspace, None)) / total if total else 0.0, ds.version)
            self._shares[workspace] = known
        return known[0]

    def _nearest(self, ds: lance.LanceDataset, vector: np.ndarray, k: int, scope: str | None) -> pa.ChunkedArray:
        """Row ids of the k nearest rows in the index's order, prefiltered by `scope` if given."""
        nearest: dict[str, Any] = {"column": "embedding", "q": vector, "k": k, "metric": "cosine", "nprobes": self.index.nprobes}
        if self.index.refine_factor and self.index.refine_factor > 1:  # the k hits are rescored anyway
            nearest["refine_factor"] = self.index.refine_factor
        if self.index.ef:
            nearest["ef"] = self.index.ef
        found = ds.to_table(columns=[], with_row_id=True, nearest=nearest, filter=scope, prefilter=True, disable_scoring_autoprojection=True)
        return found["_rowid"]

    def _take(self, ds: lance.LanceDataset, row_ids: pa.ChunkedArray, columns: list[str]) -> pa.Table:
        """The rows' `columns` and embedding, in the order given, from the searched version
        (pylance's take by row id: marked unstable; LanceDB searches through it too)."""
        return ds._take_rows(row_ids.to_pylist(), columns=[*dict.fromkeys(columns), "embedding"])

    def _rescored(self, rows: pa.Table, vector: np.ndarray, columns: list[str]) -> pa.Table:
        """`columns` plus exact cosine `similarity`, best first."""
        emb = rows["embedding"].combine_chunks().flatten().to_numpy().reshape(rows.num_rows, self.embedder.dim)
        norms = np.linalg.norm(emb, axis=1) * np.linalg.norm(vector)
        similarity = (emb @ vector) / np.maximum(norms, np.finfo(np.float32).tiny)
        order = np.argsort(-similarity, kind="stable")
        hits = rows.select(columns)
        if np.any(order != np.arange(len(order))):  # the index's order is usually already exact
            hits, similarity = hits.take(order), similarity[order]
        return hits.append_column("similarity", pa.array(similarity, pa.float32()))

    @staticmethod
    def _k(k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 10_000:
            raise ValidationError("k", f"must be an integer in [1, 10000], got {k!r}")
        return k

    @staticmethod
    def _public(hits: pa.Table) -> pa.Table:
        return hits.select([c for c in hits.column_names if c not in HIDDEN and not c.startswith("_") and c != "query_index"])

    def retrieve(
        self,
        query: str,
        workspace: str = DEFAULT_WORKSPACE,
        k: int = 5,
        where: str | None = None,
        mode: str = "vector",
        record: bool = True,
        columns: Sequence[str] | str | None = None,
    ) -> pa.Table:
        """The k experiences of `workspace` most relevant to `query`, and count the retrieval.

        `mode`: "vector" (cosine on the embedding), "text" (BM25 over when_to_use and content;
        needs `build_index`), or "hybrid" (both, fused by reciprocal rank). `where` is an extra SQL
        filter. `similarity` is always the query's cosine similarity to the row and `relevance` the
        ranking score of the mode; the stored `score` is never touched. With `record`, `freq` of
        every returned row goes up by one (in one write), and the rows show the counted value.
        `columns` as in `search`.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "must be a non-empty string")
        if mode not in MODES:
            raise ValidationError("mode", f"must be one of {list(MODES)}, got {mode!r}")
        self._k(k), self._scope(workspace, where)  # refuse bad arguments before paying for the embedding
        wanted = self._result_columns(columns)
        read = [*wanted, "experience_id"] if record else wanted  # counting needs the ids
        vector = self.embedder.embed([query])[0]
        if mode == "vector":
            hits = self.search(vector, workspace, k, where, columns=read)
            hits = hits.append_column("relevance", hits["similarity"])
        else:
            hits = self._text_search(query, vector, workspace, self._k(k), where, mode)
        if record and hits.num_rows:
            self._increment("freq", Counter(hits["experience_id"].to_pylist()))
            if "freq" in wanted:
                hits = hits.set_column(hits.schema.get_field_index("freq"), "freq", pc.add(hits["freq"], 1))
        return hits.select([*wanted, "similarity", "relevance"])

    def _text_search(self, query: str, vector: np.ndarray, workspace: str, k: int, where: str | None, mode: str) -> pa.Table:
        indexed = {i.columns[0] for i in self._lance.list_indices() if i.index_type == "FTS"}
        if not set(indexes.TEXT_COLUMNS) <= indexed:
            raise ValidationError(
                "mode", f"{mode!r} search needs the full-text index: call build_index() first (on the command line: replaystore experiences index)"
            )
        table = self._lance
        if mode == "text":
            builder = table.search(query, query_type="fts", fts_columns=list(indexes.TEXT_COLUMNS))
            score = "_score"
        else:
            builder = table.search(query_type="hybrid", vector_column_name="embedding", fts_columns=list(indexes.TEXT_COLUMNS))
            builder = builder.vector(vector).text(query)
            score = "_relevance_score"
        hits = builder.where(self._scope(workspace, where), prefilter=True).limit(k).to_arrow()
        emb = hits["embedding"].combine_chunks().flatten().to_numpy().reshape(hits.num_rows, self.embedder.dim)
        out = self._public(hits)
        return out.append_column("similarity", pa.array(emb @ vector, pa.float32())).append_column("relevance", hits[score].cast(pa.float32()))

    # -- counters and refine ------------------------------------------------------------------

    def _require(self, ids: Iterable[str]) -> list[str]:
        """The distinct ids, sorted; `NotFoundError` (nothing written) if any is not in the table."""
        wanted = sorted(set(ids))
        found = set(self.store.read(self.table, columns=["experience_id"], filter=in_list("experience_id", wanted))["experience_id"].to_pylist())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFoundError(f"table '{self.table}' has no experience {missing[0]!r} ({len(missing)} unknown id(s))")
        return wanted

    def _increment(self, column: str, counts: Counter[str]) -> int:
        """Add per-id counts to `column` in one update, after checking every id exists."""
        self._require(counts)
        version = add_counts(self.store, self.table, {column: counts})
        assert version is not None  # `counts` is not empty: record_use writes nothing for no helpful use
        return version

    def record_use(self, ids: Sequence[str], helpful: bool | Sequence[bool] = True) -> int | None:
        """Count uses of retrieved experiences: `utility += 1` per helpful use, in one write.

        `helpful` is one flag for all ids or one per id; an id listed twice counts twice. Unknown
        ids raise `NotFoundError` and nothing is written. Returns the new version (None: no
        helpful use, nothing written).
        """
        ids = _check_ids(ids)
        flags = [helpful] * len(ids) if isinstance(helpful, bool) else list(helpful)
        if len(flags) != len(ids) or not all(isinstance(f, bool) for f in flags):
            raise ValidationError("helpful", "must be a bool or one bool per id")
        counts = Counter(i for i, f in zip(ids, flags) if f)
        if not counts:
            self._require(ids)
            return None
        return self._increment("utility", counts)

    def refine(self, freq_threshold: int = 5, utility_threshold: float = 0.5, workspace: str | None = None) -> pa.Table:
        """Archive experiences retrieved often but rarely helpful (ReMe's utility rule).

        Archived: active rows with `freq ≥ freq_threshold` and `utility / freq < utility_threshold`.
        Returns them (id, workspace, freq, utility); `restore(ids)` makes them active again.
        """
        rule = refine_rule(freq_threshold, utility_threshold, workspace)
        archived = self.store.read(self.table, columns=["experience_id", "workspace", "freq", "utility"], filter=rule)
        if archived.num_rows:  # exactly the rows the rule picked in the version read, whatever lands meanwhile
            ids = in_list("experience_id", archived["experience_id"].to_pylist())
            self.store.update(self.table, {"status": "'archived'", "updated_at": NOW}, where=f"{ids} AND status = 'active'")
        return archived

    def restore(self, ids: Sequence[str]) -> int:
        """Make archived experiences active again (unknown ids raise `NotFoundError`)."""
        ids = self._require(_check_ids(ids))
        return self.store.update(self.table, {"status": "'active'", "updated_at": NOW}, where=in_list("experience_id", ids))

    # -- distill, index, reads ----------------------------------------------------------------

    def distill(
        self,
        trajectories: Iterable[Any],
        extractor: Extractor | None = None,
        workspace: str = DEFAULT_WORKSPACE,
        min_score: float = 0.5,
        success_threshold: float = 1.0,
    ) -> DistillReport:
        """Trajectories → success/failure/comparative lessons → validation (keep ≥ min_score) → add.

        The validation score is stored as the experience's `score`.
        """
        if not is_finite_number(min_score) or not 0.0 <= min_score <= 1.0:
            raise ValidationError("min_score", f"must be a validation score in [0, 1], got {min_score!r}")
        extractor = extractor or RuleExtractor()
        items = [as_trajectory(t, i) for i, t in enumerate(trajectories)]
        candidates = extractor.extract(group(items, success_threshold))
        scores = extractor.validate(candidates) if candidates else []
        keep = [{**c, "score": s, "author": c.get("author") or extractor.author} for c, s in zip(candidates, scores) if s >= min_score]
        rejected = [{**c, "score": s} for c, s in zip(candidates, scores) if s < min_score]
        report = self.add(keep, workspace=workspace) if keep else AddReport()
        return DistillReport(len(candidates), rejected, report.added, report.skipped)

    def build_index(self, min_vector_rows: int = indexes.MIN_VECTOR_ROWS, vector: bool | None = None) -> indexes.IndexReport:
        """Scalar (id, workspace, status), full-text (when_to_use, content) and vector indexes."""
        return indexes.build(self.store, self.table, self.index, min_vector_rows, vector)

    def get(self, ids: Sequence[str]) -> pa.Table:
        """Experiences by id (without embeddings); none for no ids."""
        ids = _check_ids(ids)
        if not ids:
            return self.store.read(self.table, columns=self._columns, filter="false")
        return self.store.read(self.table, columns=self._columns, filter=in_list("experience_id", ids))

    def import_jsonl(self, path: str, workspace: str | None = None) -> int:
        """Load a ReMe task-memory dump (see `reme_io`); returns the rows written."""
        from replaystore.experiences.reme_io import import_jsonl

        return import_jsonl(self, path, workspace)

    def export_jsonl(self, path: str, workspace: str | None = None, include_archived: bool = True) -> int:
        """Write experiences as a ReMe task-memory dump (see `reme_io`); returns the rows written."""
        from replaystore.experiences.reme_io import export_jsonl

        return export_jsonl(self, path, workspace, include_archived)


def refine_rule(freq_threshold: int = 5, utility_threshold: float = 0.5, workspace: str | None = None) -> str:
    """The Lance filter of the rows `refine` archives; reading with it shows what the next refine would archive."""
    if not isinstance(freq_threshold, int) or isinstance(freq_threshold, bool) or freq_threshold < 1:
        raise ValidationError("freq_threshold", f"must be an integer ≥ 1, got {freq_threshold!r}")
    if not is_finite_number(utility_threshold) or utility_threshold < 0:
        raise ValidationError("utility_threshold", f"must be a finite number ≥ 0, got {utility_threshold!r}")
    rule = f"status = 'active' AND freq >= {freq_threshold} AND CAST(utility AS DOUBLE) / CAST(freq AS DOUBLE) < {float(utility_threshold)!r}"
    if workspace is not None:
        rule += f" AND workspace = {literal(_check_workspace(workspace))}"
    return rule


def add_counts(store: Store, table: str, counts: Mapping[str, Counter[str]]) -> int | None:
    """Add per-id counts to counter columns (`{"freq": uses, "utility": helpful}`) in ONE update.

    Lance applies the update to the latest version and re-applies it on a conflict, so counts from
    other processes and machines meanwhile are neither lost nor counted twice. Ids not in the table
    are not touched. Returns the new version (None: nothing to count).
    """
    ids = sorted({i for per_id in counts.values() for i in per_id})
    values = {column: increments(column, "experience_id", per_id) for column, per_id in counts.items() if per_id}
    if not values:
        return None
    return store.update(table, {**values, "updated_at": NOW}, where=in_list("experience_id", ids))
