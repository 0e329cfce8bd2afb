"""Named orderings of a source's samples, stored with the definition that produced them.

An ordering is rows of `curriculum_orderings`: (ordering, source, sample_id, position, difficulty)
plus the JSON definition (metric, direction, pacing and parameters, seed). `difficulty` is the
percentile the sampler compares with c(t) and always follows position order: the metric percentile
for easy-to-hard, the reversed one for hard-to-easy, and (position + 1) / n for random and user
lists. Building an ordering of an existing name replaces it in one commit (the old one stays
readable as an earlier version).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replaystore.curriculum.pacing import (
    DiscretePacing,
    Pacing,
    check_discrete,
    pacing_from_dict,
)
from replaystore.curriculum.sampler import CurriculumSampler
from replaystore.curriculum.scoring import (
    SCORES,
    ids_as_strings,
    load_scores,
    percentiles,
    validate_metric,
)
from replaystore.errors import TableNameError, ValidationError
from replaystore.schemas import Kind
from replaystore.store import Store, Version, validate_name

ORDERINGS = Kind.CURRICULUM_ORDERINGS.value
DIRECTIONS = ("easy_to_hard", "hard_to_easy", "random", "list")
DIFFICULTY_TYPES = ("percentile", "value")
_BY_METRIC = ("easy_to_hard", "hard_to_easy")


@dataclass(frozen=True)
class OrderingDefinition:
    """How an ordering is built and paced; stored as JSON with every row of the ordering.

    `difficulty_type="value"` (DeepSpeed's) gives the schedule in metric values as
    `value_schedule = (thresholds, steps)`; building the ordering turns it into a percentile
    `DiscretePacing` exactly, from the stored scores.
    """

    direction: str = "easy_to_hard"
    metric: str | None = None
    pacing: Pacing | None = None
    seed: int = 0
    difficulty_type: str = "percentile"
    value_schedule: tuple[tuple[float, ...], tuple[int, ...]] | None = None
    imported_from: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValidationError("direction", f"must be one of {list(DIRECTIONS)}, got {self.direction!r}")
        if self.direction in _BY_METRIC:
            if self.metric is None:
                raise ValidationError("metric", f"a {self.direction} ordering needs a metric")
            validate_metric(self.metric)
        elif self.metric is not None:
            raise ValidationError("metric", f"a {self.direction} ordering does not use a metric, got {self.metric!r}")
        if self.pacing is not None and not isinstance(self.pacing, Pacing):
            raise ValidationError("pacing", f"must be a Pacing (see replaystore.curriculum.pacing), got {type(self.pacing).__name__}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValidationError("seed", f"must be an integer ≥ 0, got {self.seed!r}")
        if self.difficulty_type not in DIFFICULTY_TYPES:
            raise ValidationError("difficulty_type", f"must be one of {list(DIFFICULTY_TYPES)}, got {self.difficulty_type!r}")
        if self.difficulty_type == "value":
            if self.direction != "easy_to_hard" or self.value_schedule is None:
                raise ValidationError("value_schedule", "a value difficulty needs an easy_to_hard ordering and a (thresholds, steps) schedule")
            object.__setattr__(self, "value_schedule", check_discrete(*self.value_schedule, upper=None, field="value_schedule"))
        elif self.value_schedule is not None:
            raise ValidationError("value_schedule", "only a 'value' difficulty_type takes a value schedule")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "direction": self.direction,
            "metric": self.metric,
            "pacing": self.pacing.to_dict() if self.pacing else None,
            "seed": self.seed,
            "difficulty_type": self.difficulty_type,
        }
        if self.value_schedule is not None:
            out["value_schedule"] = {"thresholds": list(self.value_schedule[0]), "steps": list(self.value_schedule[1])}
        if self.imported_from is not None:
            out["imported_from"] = dict(self.imported_from)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> OrderingDefinition:
        if not isinstance(spec, Mapping):
            raise ValidationError("definition", f"must be a mapping, got {type(spec).__name__}")
        known = {"direction", "metric", "pacing", "seed", "difficulty_type", "value_schedule", "imported_from"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValidationError(unknown[0], f"unknown key of an ordering definition (known: {sorted(known)})")
        schedule = spec.get("value_schedule")
        if schedule is not None and (not isinstance(schedule, Mapping) or set(schedule) != {"thresholds", "steps"}):
            raise ValidationError("value_schedule", "must be {'thresholds': [...], 'steps': [...]}")
        return cls(
            direction=spec.get("direction", "easy_to_hard"),
            metric=spec.get("metric"),
            pacing=pacing_from_dict(spec["pacing"]) if spec.get("pacing") is not None else None,
            seed=spec.get("seed", 0),
            difficulty_type=spec.get("difficulty_type", "percentile"),
            value_schedule=(tuple(schedule["thresholds"]), tuple(schedule["steps"])) if schedule else None,
            imported_from=spec.get("imported_from"),
        )

    @classmethod
    def from_json(cls, text: str) -> OrderingDefinition:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValidationError("definition", f"is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class Ordering:
    """A stored ordering: sample ids in position order with their difficulty percentiles."""

    name: str
    source: str
    sample_ids: np.ndarray
    difficulty: np.ndarray
    definition: OrderingDefinition


def _ordering_name(name: str) -> str:
    try:
        return validate_name(name)
    except TableNameError as exc:
        raise ValidationError("ordering", exc.rule) from None


def _source_ids(store: Store, source: str, id_column: str, version: Version | None, filter: str | None = None) -> np.ndarray:
    table = store.table(source, version)
    if table.schema.get_field_index(id_column) < 0:
        raise ValidationError("id_column", f"source '{source}' has no column '{id_column}' (has: {', '.join(table.schema.names)})")
    return ids_as_strings(table.read(columns=[id_column], filter=filter).column(id_column))


def _rank_positions(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64) / n


def _value_pacing(definition: OrderingDefinition, values: np.ndarray) -> DiscretePacing:
    """Value thresholds → the exact percentile thresholds that admit the same samples."""
    assert definition.value_schedule is not None
    thresholds, steps = definition.value_schedule
    ordered = np.sort(values)
    pct = np.searchsorted(ordered, np.asarray(thresholds), side="right") / len(values)
    floor = np.searchsorted(ordered, ordered[0], side="right") / len(values)  # the sampler always admits the easiest
    return DiscretePacing(tuple(np.maximum(pct, floor)), steps)


def _arrange(
    store: Store,
    source: str,
    definition: OrderingDefinition,
    ids: Sequence[Any] | None,
    id_column: str,
    scores_table: str,
    version: Version | None,
) -> tuple[np.ndarray, np.ndarray, OrderingDefinition]:
    """Sample ids in position order, their difficulty, and the definition with its pacing resolved."""
    if definition.direction == "list":
        if ids is None or len(ids) == 0:
            raise ValidationError("ids", "a list ordering needs a non-empty list of sample ids")
        given = ids_as_strings(pa.array(list(ids)))
        if len(np.unique(given)) != len(given):
            raise ValidationError("ids", "sample ids must not repeat")
        known = pc.is_in(pa.array(given, pa.string()), value_set=pa.array(_source_ids(store, source, id_column, version), pa.string()))
        missing = np.flatnonzero(~known.to_numpy(zero_copy_only=False))
        if len(missing):
            raise ValidationError("ids", f"unknown sample id {given[missing[0]]!r} in source '{source}' ({len(missing)} unknown)")
        return given, _rank_positions(len(given)), definition
    if ids is not None:
        raise ValidationError("ids", f"only a list ordering takes ids, not {definition.direction}")
    if definition.direction == "random":
        all_ids = _source_ids(store, source, id_column, version)
        if len(all_ids) == 0:
            raise ValidationError("source", f"'{source}' has no rows to order")
        return all_ids[np.random.default_rng(definition.seed).permutation(len(all_ids))], _rank_positions(len(all_ids)), definition
    assert definition.metric is not None
    scores = load_scores(store, source, definition.metric, scores_table)
    # Ties in value are broken by id, so the order is reproducible; hard-to-easy is its exact reverse.
    order = np.lexsort((scores.sample_ids.astype(str), scores.values))
    if definition.direction == "easy_to_hard":
        difficulty = scores.percentiles
    else:
        order, difficulty = order[::-1], percentiles(-scores.values)
    if definition.difficulty_type == "value":
        definition = replace(definition, pacing=_value_pacing(definition, scores.values))
    return scores.sample_ids[order], difficulty[order], definition


def build_ordering(
    store: Store,
    name: str,
    source: str,
    definition: OrderingDefinition,
    *,
    ids: Sequence[Any] | None = None,
    id_column: str = "sample_id",
    scores_table: str = SCORES,
    table: str = ORDERINGS,
    version: Version | None = None,
) -> int:
    """Build (or replace) ordering `name` of `source` and store it; returns the new table version.

    Metric orderings read `scores_table` (score first, see `scoring.score`); random and list
    orderings read the source's `id_column` (as of `version`).
    """
    name = _ordering_name(name)
    validate_name(source)
    if not isinstance(definition, OrderingDefinition):
        raise ValidationError(
            "definition",
            f"must be an OrderingDefinition, got {type(definition).__name__} (a single-cluster DeepSpeed metric "
            "admits every row: apply its SeqlenCurriculum to the batches instead of building an ordering)",
        )
    sample_ids, difficulty, resolved = _arrange(store, source, definition, ids, id_column, scores_table, version)
    n = len(sample_ids)
    rows = {
        "ordering": pa.array(np.full(n, name, dtype=object), pa.string()),
        "source": pa.array(np.full(n, source, dtype=object), pa.string()),
        "sample_id": pa.array(sample_ids, pa.string()),
        "position": pa.array(np.arange(n, dtype=np.int64)),
        "difficulty": pa.array(difficulty),
        "definition": pa.array(np.full(n, resolved.to_json(), dtype=object), pa.string()),
    }
    return store.table(table, create=Kind.CURRICULUM_ORDERINGS).merge(rows, on=["ordering", "sample_id"], delete_unmatched=f"ordering = '{name}'")


def load_ordering(store: Store, name: str, *, table: str = ORDERINGS, version: Version | None = None) -> Ordering:
    """Read ordering `name` (as of `version` of the orderings table) in position order."""
    name = _ordering_name(name)
    stored = store.find(table, version)
    if stored is None:
        raise ValidationError("ordering", f"unknown ordering '{name}' (stored: none)")
    data = stored.read(columns=["source", "sample_id", "position", "difficulty", "definition"], filter=f"ordering = '{name}'")
    if data.num_rows == 0:
        known = sorted(set(stored.read(columns=["ordering"]).column("ordering").to_pylist()))
        raise ValidationError("ordering", f"unknown ordering '{name}' (stored: {', '.join(known) or 'none'})")
    data = data.sort_by("position")
    return Ordering(
        name=name,
        source=data.column("source")[0].as_py(),
        sample_ids=ids_as_strings(data.column("sample_id")),
        difficulty=data.column("difficulty").to_numpy(zero_copy_only=False).astype(np.float64),
        definition=OrderingDefinition.from_json(data.column("definition")[0].as_py()),
    )


def list_orderings(store: Store, *, table: str = ORDERINGS, version: Version | None = None) -> list[dict[str, Any]]:
    """One row per stored ordering: name, source, samples, definition."""
    stored = store.find(table, version)
    if stored is None:
        return []
    data = stored.read(columns=["ordering", "source", "definition"])
    grouped = data.group_by("ordering").aggregate([("source", "min"), ("definition", "min"), ("ordering", "count")])
    return sorted(
        (
            {"ordering": r["ordering"], "source": r["source_min"], "samples": r["ordering_count"], "definition": r["definition_min"]}
            for r in grouped.to_pylist()
        ),
        key=lambda r: r["ordering"],
    )


def aligned_difficulty(
    store: Store,
    ordering: str | Ordering,
    *,
    source: str | None = None,
    id_column: str = "sample_id",
    filter: str | None = None,
    version: Version | None = None,
    table: str = ORDERINGS,
) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, difficulty percentiles) for every row of the source as the stream reads it.

    Row i of both arrays is row i of `store.read(source, version, filter=filter)`; rows the
    ordering does not cover get NaN (the sampler never draws them).
    """
    ordering = ordering if isinstance(ordering, Ordering) else load_ordering(store, ordering, table=table)
    ids = _source_ids(store, source or ordering.source, id_column, version, filter)
    where = pc.index_in(pa.array(ids, pa.string()), value_set=pa.array(ordering.sample_ids, pa.string()))
    index = where.fill_null(-1).to_numpy(zero_copy_only=False)
    difficulty = np.where(index >= 0, ordering.difficulty[np.maximum(index, 0)], np.nan)
    return ids, difficulty


def curriculum_sampler(
    store: Store,
    ordering: str,
    *,
    seed: int | None = None,
    pacing: Pacing | None = None,
    source: str | None = None,
    id_column: str = "sample_id",
    filter: str | None = None,
    version: Version | None = None,
    table: str = ORDERINGS,
) -> tuple[np.ndarray, CurriculumSampler]:
    """The source's ids (row order) and a sampler over those rows with the ordering's pacing and seed.

    `pacing`/`seed` override the stored ones; the other arguments are those of `aligned_difficulty`.
    """
    loaded = load_ordering(store, ordering, table=table)
    chosen = pacing or loaded.definition.pacing
    if chosen is None:
        raise ValidationError("pacing", f"ordering '{ordering}' stores no pacing; pass one")
    ids, difficulty = aligned_difficulty(store, loaded, source=source, id_column=id_column, filter=filter, version=version)
    return ids, CurriculumSampler(difficulty, chosen, seed=loaded.definition.seed if seed is None else seed)


# -- comparing orderings --------------------------------------------------------------------------


def _ids(ordering: Ordering | Sequence[Any] | np.ndarray) -> np.ndarray:
    return ordering.sample_ids if isinstance(ordering, Ordering) else ids_as_strings(pa.array(list(ordering)))


def kendall_tau(a: Ordering | Sequence[Any], b: Ordering | Sequence[Any]) -> float:
    """Kendall's tau-b between the positions of the samples two orderings share (1 = same order)."""
    ids_a, ids_b = _ids(a), _ids(b)
    common, pos_a, pos_b = np.intersect1d(ids_a.astype(str), ids_b.astype(str), assume_unique=True, return_indices=True)
    if len(common) < 2:
        raise ValidationError("orderings", f"need at least 2 shared samples to compare, got {len(common)}")
    from scipy import (
        stats,  # imported here: scipy is slow to import and only comparisons need it
    )

    return float(stats.kendalltau(pos_a, pos_b).statistic)


def top_k_overlap(a: Ordering | Sequence[Any], b: Ordering | Sequence[Any], k: int) -> float:
    """Fraction of the first k samples of `a` that are also among the first k of `b`."""
    ids_a, ids_b = _ids(a), _ids(b)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(len(ids_a), len(ids_b)):
        raise ValidationError("k", f"must be an integer in [1, {min(len(ids_a), len(ids_b))}], got {k!r}")
    return len(np.intersect1d(ids_a[:k].astype(str), ids_b[:k].astype(str))) / k


def compare_orderings(store: Store, a: str, b: str, k: int = 100, *, table: str = ORDERINGS) -> dict[str, Any]:
    """Kendall tau and top-k overlap of two stored orderings."""
    first, second = load_ordering(store, a, table=table), load_ordering(store, b, table=table)
    k = min(k, len(first.sample_ids), len(second.sample_ids))
    shared = len(np.intersect1d(first.sample_ids.astype(str), second.sample_ids.astype(str)))
    return {"a": a, "b": b, "shared": shared, "kendall_tau": kendall_tau(first, second), "k": k, "top_k_overlap": top_k_overlap(first, second, k)}
