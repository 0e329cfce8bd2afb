"""Pacing functions: how much of the difficulty range training may see at step t.

A pacing maps a step t ≥ 0 to a competence c(t) ∈ (0, 1] ([0, 1] for a discrete one): the sampler admits every sample whose
difficulty percentile is ≤ c(t) (Platanios et al. 2019). `competence` takes a scalar or an array
of steps, so a whole schedule (for a plot or a check) is one numpy call. Every pacing validates
its parameters on construction and round-trips through a plain dict (`to_dict`/`pacing_from_dict`),
which is how ordering definitions store it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from replaystore.checks import is_finite_number
from replaystore.errors import ValidationError


def _check_c0(c0: Any) -> float:
    if not is_finite_number(c0) or not 0 < c0 <= 1:
        raise ValidationError("c0", f"initial competence must be in (0, 1], got {c0!r}")
    return float(c0)


def _check_total(total: Any) -> int:
    if not isinstance(total, (int, np.integer)) or isinstance(total, bool) or total <= 0:
        raise ValidationError("T", f"total curriculum steps must be a positive integer, got {total!r}")
    return int(total)


def _steps(step: Any) -> np.ndarray:
    steps = np.asarray(step, dtype=np.float64)
    if not np.all(np.isfinite(steps)) or np.any(steps < 0):
        raise ValidationError("step", "steps must be finite and ≥ 0")
    return steps


def _out(values: np.ndarray, step: Any) -> Any:
    return float(values) if np.ndim(step) == 0 else values


def check_discrete(difficulties: Any, steps: Any, upper: float | None, field: str = "difficulties") -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Validate a discrete schedule: one more difficulty than steps, steps rising, difficulties not falling.

    `upper` bounds the difficulties to [0, upper]; None allows any finite value (metric values).
    """
    if not isinstance(difficulties, (Sequence, np.ndarray)) or not isinstance(steps, (Sequence, np.ndarray)):
        raise ValidationError(field, "difficulties and steps must be lists")
    diffs, stps = tuple(difficulties), tuple(steps)
    if len(diffs) != len(stps) + 1:
        raise ValidationError(field, f"needs exactly one more entry than steps, got {len(diffs)} difficulties and {len(stps)} steps")
    if not all(is_finite_number(d) and (upper is None or 0 <= d <= upper) for d in diffs):
        rule = f"in [0, {upper:g}]" if upper is not None else "a finite number"
        raise ValidationError(field, f"each difficulty must be {rule}, got {list(diffs)}")
    if any(b < a for a, b in zip(diffs, diffs[1:])):
        raise ValidationError(field, f"must not decrease, got {list(diffs)}")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in stps):
        raise ValidationError("steps", f"each step must be an integer ≥ 0, got {list(stps)}")
    if any(b <= a for a, b in zip(stps, stps[1:])):
        raise ValidationError("steps", f"must strictly increase, got {list(stps)}")
    return tuple(float(d) for d in diffs), tuple(int(s) for s in stps)


class Pacing:
    """Base of the pacing functions; subclasses implement `_competence` on a float array."""

    type: ClassVar[str]

    def competence(self, step: Any) -> Any:
        """c(step) for an int or an array of steps (float or float array), always in (0, 1]."""
        return _out(self._competence(_steps(step)), step)

    def _competence(self, steps: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class RootPacing(Pacing):
    """`min(1, (t(1−c0^p)/T + c0^p)^(1/p))`: p = 1 is linear, p = 2 square root."""

    c0: float
    T: int
    p: float = 2.0
    type: ClassVar[str] = "root"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c0", _check_c0(self.c0))
        object.__setattr__(self, "T", _check_total(self.T))
        if not is_finite_number(self.p) or self.p < 1:
            raise ValidationError("p", f"root degree must be a finite number ≥ 1, got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))

    def _competence(self, steps: np.ndarray) -> np.ndarray:
        base = self.c0**self.p
        grown = (steps * (1.0 - base) / self.T + base) ** (1.0 / self.p)
        return np.where(steps >= self.T, 1.0, np.minimum(1.0, grown))  # exactly 1 from T on, whatever the rounding

    def to_dict(self) -> dict[str, Any]:
        if self.p == 1:
            return {"type": "linear", "c0": self.c0, "T": self.T}
        if self.p == 2:
            return {"type": "sqrt", "c0": self.c0, "T": self.T}
        return {"type": "root", "c0": self.c0, "T": self.T, "p": self.p}


def LinearPacing(c0: float, T: int) -> RootPacing:  # noqa: N802 - reads as a class at call sites
    """`min(1, t(1−c0)/T + c0)`: the p = 1 root pacing."""
    return RootPacing(c0, T, 1.0)


def SqrtPacing(c0: float, T: int) -> RootPacing:  # noqa: N802
    """`min(1, sqrt(t(1−c0²)/T + c0²))`: the p = 2 root pacing."""
    return RootPacing(c0, T, 2.0)


@dataclass(frozen=True)
class DiscretePacing(Pacing):
    """`difficulties[i]` while step ≤ `steps[i]`, the last difficulty after (DeepSpeed fixed_discrete).

    There is one more difficulty than steps; steps strictly increase and difficulties never
    decrease, so the admitted set only grows. A difficulty may be 0 (a DeepSpeed percentile
    schedule rounded down to 0): the sampler then admits only the easiest tie group.
    """

    difficulties: tuple[float, ...]
    steps: tuple[int, ...]
    type: ClassVar[str] = "discrete"

    def __post_init__(self) -> None:
        diffs, steps = check_discrete(self.difficulties, self.steps, upper=1.0)
        object.__setattr__(self, "difficulties", diffs)
        object.__setattr__(self, "steps", steps)

    def _competence(self, steps: np.ndarray) -> np.ndarray:
        index = np.searchsorted(np.asarray(self.steps, dtype=np.float64), steps, side="left")
        return np.asarray(self.difficulties)[index]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "discrete", "difficulties": list(self.difficulties), "steps": list(self.steps)}


def pacing_from_dict(spec: Mapping[str, Any]) -> Pacing:
    """Build a pacing from `{"type": "linear"|"sqrt"|"root"|"discrete", ...parameters}`."""
    if not isinstance(spec, Mapping):
        raise ValidationError("pacing", f"must be a mapping with a 'type', got {type(spec).__name__}")
    kind = spec.get("type")
    params = {k: v for k, v in spec.items() if k != "type"}
    allowed = {"linear": {"c0", "T"}, "sqrt": {"c0", "T"}, "root": {"c0", "T", "p"}, "discrete": {"difficulties", "steps"}}
    if not isinstance(kind, str) or kind not in allowed:
        raise ValidationError("pacing.type", f"must be one of {list(allowed)}, got {kind!r}")
    extra = set(params) - allowed[kind]
    missing = allowed[kind] - set(params) - ({"p"} if kind == "root" else set())
    if extra or missing:
        name = sorted(extra or missing)[0]
        raise ValidationError(f"pacing.{name}", f"{'unknown' if extra else 'missing'} parameter of {kind} pacing (takes {sorted(allowed[kind])})")
    if kind == "linear":
        return LinearPacing(params["c0"], params["T"])
    if kind == "sqrt":
        return SqrtPacing(params["c0"], params["T"])
    if kind == "root":
        return RootPacing(params["c0"], params["T"], params.get("p", 2.0))
    return DiscretePacing(params["difficulties"], params["steps"])


def schedule_length(pacing: Pacing) -> int:
    """The first step from which c(t) no longer changes (where a plot of the schedule can stop)."""
    if isinstance(pacing, DiscretePacing):
        return pacing.steps[-1] + 1 if pacing.steps else 1
    assert isinstance(pacing, RootPacing)
    return pacing.T
