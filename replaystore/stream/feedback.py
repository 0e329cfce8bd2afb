"""Experience utility from training: how often each experience was trained on, and how often it helped.

The loss log names rows by (source, version, position). For sources that read an experiences table,
positions become `experience_id`s of the exact version that was read; then one update per table adds
to `freq` the times each experience was trained on and to `utility` the times that use helped
(`replaystore.experiences.add_counts`, what `record_use` writes through): uses counted by other
processes and machines meanwhile are neither lost nor counted twice.

A use is helpful when the loop said so (`LossLog.add(helpful=...)`); otherwise when its loss is at
most `helpful_below`. With neither, nothing is guessed: the write is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from replaystore.checks import is_finite_number
from replaystore.errors import ValidationError
from replaystore.experiences import add_counts
from replaystore.predicates import in_list
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.stream.priorities import ids_at, row_ids
from replaystore.stream.sources import Source, StoreSource

EXPERIENCES = Kind.EXPERIENCES.value


@dataclass(frozen=True)
class UtilityCounts:
    """What one experiences table gets: per experience id, uses (→ freq) and helpful uses (→ utility)."""

    table: str
    uses: Counter[str]
    helpful: Counter[str]


@dataclass(frozen=True)
class UtilityWrite:
    """One table's write: its version (None: nothing to write) and what it counted."""

    table: str
    version: int | None
    experiences: int  # distinct experiences whose counters moved
    uses: int  # added to freq, in total
    helpful: int  # added to utility, in total
    missing: int  # experiences deleted since the run read them: nothing to count them on


def _target(store: Store, source: Source, table: str) -> str | None:
    """The experiences table of `store` a source reads, if it reads one."""
    if not isinstance(source, StoreSource) or source.store.uri != store.uri:
        return None
    if source.table == table or store.kind(source.table) == Kind.EXPERIENCES:
        return source.table
    return None


def utility_counts(store: Store, sources: Sequence[Source], log: pa.Table, helpful_below: float | None = None, table: str = EXPERIENCES) -> list[UtilityCounts]:
    """Count uses per experience from a loss log, checking everything and writing nothing."""
    if helpful_below is not None and not is_finite_number(helpful_below):
        raise ValidationError("helpful_below", f"must be a finite number, got {helpful_below!r}")
    by_name = {s.name: s for s in sources}
    out: dict[str, UtilityCounts] = {}
    for group in log.group_by(["source", "version"]).aggregate([]).to_pylist():
        name, version = group["source"], group["version"]
        if name not in by_name:
            raise ValidationError("source", f"log names source '{name}' that is not one of {sorted(by_name)}")
        target = _target(store, by_name[name], table)
        if target is None:
            continue
        rows = log.filter(pc.and_(pc.equal(log["source"], name), pc.equal(log["version"], version)))
        ids = row_ids(by_name[name], None if version < 0 else version, "experience_id")
        helpful = rows["helpful"].fill_null(False).to_numpy(zero_copy_only=False)
        unjudged = rows["helpful"].is_null().to_numpy(zero_copy_only=False)  # the loop did not say
        if unjudged.any():
            if helpful_below is None:
                raise ValidationError(
                    "helpful_below", f"{int(unjudged.sum())} rows of '{name}' carry no helpful flag: give the loss at or below which a use helped"
                )
            helpful[unjudged] = rows["loss"].to_numpy()[unjudged] <= helpful_below
        used = ids_at(ids, rows["position"], name, version).to_pylist()
        counts = out.setdefault(target, UtilityCounts(target, Counter(), Counter()))
        counts.uses.update(used)
        counts.helpful.update(i for i, h in zip(used, helpful) if h)
    return list(out.values())


def apply_utility(store: Store, counts: UtilityCounts) -> UtilityWrite:
    """One update: `freq += uses`, `utility += helpful uses` (ids no longer in the table skipped)."""
    wanted = sorted(counts.uses)
    stored = store.read(counts.table, columns=["experience_id"], filter=in_list("experience_id", wanted))
    found = set(stored["experience_id"].to_pylist())
    uses = Counter({i: n for i, n in counts.uses.items() if i in found})
    helpful = Counter({i: n for i, n in counts.helpful.items() if i in found})
    version = add_counts(store, counts.table, {"freq": uses, "utility": helpful})
    return UtilityWrite(counts.table, version, len(uses), sum(uses.values()), sum(helpful.values()), len(wanted) - len(found))


def write_utility(store: Store, sources: Sequence[Source], log: pa.Table, helpful_below: float | None = None, table: str = EXPERIENCES) -> list[UtilityWrite]:
    """Experience counters from a loss log: one update per experiences table read (usually one).

    Rows of other sources are ignored. Bad input (unknown source, positions outside the snapshot,
    unjudged rows without `helpful_below`) raises before anything is written.
    """
    return [apply_utility(store, c) for c in utility_counts(store, sources, log, helpful_below, table)]
