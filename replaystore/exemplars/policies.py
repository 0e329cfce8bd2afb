"""Policies say how many exemplars each class may keep; the budget then says how many fit at all.

PyCIL's two memory modes: `fixed_total` spreads one exemplar budget over the classes seen
(`slots // classes`, so old classes shrink as new ones arrive) and `fixed_per_class` keeps `m`
per class (the total grows with the classes, until the byte budget stops it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from replaystore.errors import ValidationError


@dataclass(frozen=True)
class Quota:
    """Limits on one class's best-ranked rows: a row count, a byte total, or both (None = no limit)."""

    rows: int | None = None
    nbytes: int | None = None


class Policy(Protocol):
    name: ClassVar[str]

    def quota(self, exemplar_bytes: int | None, classes: int) -> Quota: ...


@dataclass(frozen=True)
class FixedTotal:
    """Each class gets `exemplar_bytes // classes` bytes.

    For same-sized samples this is PyCIL's `(slots // classes)` rows, since
    floor(floor(E/C)/s) = floor(floor(E/s)/C); for token rows of varying size it stays fair in bytes.
    """

    name: ClassVar[str] = "fixed_total"

    def quota(self, exemplar_bytes: int | None, classes: int) -> Quota:
        if exemplar_bytes is None:
            raise ValidationError("budget", "policy 'fixed_total' needs a byte budget")
        return Quota(nbytes=exemplar_bytes // max(1, classes))


@dataclass(frozen=True)
class FixedPerClass:
    name: ClassVar[str] = "fixed_per_class"
    memory_per_class: int = 20

    def quota(self, exemplar_bytes: int | None, classes: int) -> Quota:
        return Quota(rows=self.memory_per_class)


POLICIES = ("fixed_total", "fixed_per_class")


def make_policy(name: str, memory_per_class: int | None = None) -> FixedTotal | FixedPerClass:
    if name == FixedTotal.name:
        if memory_per_class is not None:
            raise ValidationError("memory_per_class", "only applies to policy 'fixed_per_class'")
        return FixedTotal()
    if name == FixedPerClass.name:
        if memory_per_class is None or isinstance(memory_per_class, bool) or int(memory_per_class) != memory_per_class or memory_per_class < 0:
            raise ValidationError("memory_per_class", f"policy 'fixed_per_class' needs a whole number ≥ 0, got {memory_per_class!r}")
        return FixedPerClass(int(memory_per_class))
    raise ValidationError("policy", f"must be one of {list(POLICIES)}, got {name!r}")
