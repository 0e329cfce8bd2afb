"""How each source picks its rows at a step: small policies, combined freely with any mixing.

Every sampler answers `positions(draw)` for one (source, step, rank) cell and is deterministic in
(seed, epoch, source, step) — plus, for `Prioritized`, the priority updates it was given, which are
logged with the step they take effect at so that a resumed run replays them identically.

Without-replacement samplers walk a per-epoch order of the source (pass after pass when a source
is smaller than the epoch needs); each global step takes the next rows, each rank a contiguous
slice of them. With-replacement samplers draw the step's global rows from one generator and slice.
Either way a step's global rows never depend on the world size or the number of DataLoader workers.

Write a sampler by subclassing `Sampler` and implementing `positions`; override only the abilities
it has (priorities, step-sequential state, checkpoint state).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from replaystore.checks import is_finite_number
from replaystore.errors import ValidationError
from replaystore.stream.order import pass_positions, permutation, rng
from replaystore.stream.sumtree import SumTree

if TYPE_CHECKING:
    from replaystore.curriculum.sampler import CurriculumSampler

_UNIFORM, _PRIORITIZED = 1, 2  # stream ids, so samplers never share random numbers


@dataclass(slots=True)
class Draw:
    """One (source, step, rank) cell: which slice of the step's global rows this rank reads.
    (Not frozen: one is made per source and step, and a frozen init costs several times more.)"""

    n: int  # rows in the source's snapshot
    seed: int
    epoch: int
    source: int
    step: int  # step within the epoch
    global_step: int  # steps since the stream started, across epochs (annealing)
    cursor: int  # global rows of this source consumed before this step, this epoch
    total: int  # global rows of this source in this step
    offset: int  # this rank's first row within the step's rows
    count: int  # this rank's rows


class Sampler:
    """Base of every per-source sampling policy: subclasses implement `positions`.

    The other methods and flags are abilities with no-op defaults (as TorchRL's `samplers/base.py`
    does), which the stream calls on every sampler, so it never asks what kind of sampler it holds.
    """

    without_replacement: bool = False  # every row once per pass: can define an epoch
    step_sequential: bool = False  # must be fed every global step in order (curriculum)
    draws_ahead: bool = True  # steps may be drawn before earlier ones are consumed
    keeps_priorities: bool = False  # starts epochs from stored priorities, takes updates
    pure_draws: bool = False  # positions depend on the draw alone (no state to checkpoint or update): drawn without the stream's lock

    def reset(self, n: int, priorities: np.ndarray | None = None) -> None:
        """Start an epoch over a snapshot of `n` rows (with stored priorities, if it keeps any)."""

    def positions(self, draw: Draw) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of the snapshot this draw reads, and their importance weights (None: all 1)."""
        raise NotImplementedError(f"{type(self).__name__} must implement positions(draw)")

    def update_priority(self, positions: np.ndarray, losses: np.ndarray, at_step: int) -> None:
        """Take per-row losses, effective from global step `at_step` (only prioritized samplers use them)."""

    def consumed(self, global_step: int) -> None:
        """Every step up to `global_step` has been consumed (what a checkpoint may fold in)."""

    @property
    def next_step(self) -> int:
        """For a step-sequential sampler: the global step it draws next."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: positions are a pure function of the draw."""


@dataclass
class LegacySampler(Sampler):
    """A sampler written against the old structural protocol (not a `Sampler` subclass), wrapped so that
    it keeps working for one release; `Source` wraps it and warns."""

    inner: Any

    def __post_init__(self) -> None:
        self.without_replacement = bool(getattr(self.inner, "without_replacement", False))

    def reset(self, n: int, priorities: np.ndarray | None = None) -> None:
        self.inner.reset(n, priorities)

    def positions(self, draw: Draw) -> tuple[np.ndarray, np.ndarray | None]:
        rows, weights = self.inner.positions(draw)
        return np.asarray(rows, dtype=np.int64), weights

    def state_dict(self) -> dict[str, Any]:
        return dict(self.inner.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


def as_sampler(sampler: Any) -> Sampler:
    """`sampler` itself, or a duck-typed one wrapped with a deprecation warning."""
    if isinstance(sampler, Sampler):
        return sampler
    if not callable(getattr(sampler, "positions", None)):
        raise ValidationError("sampler", f"must be a replaystore.stream.Sampler, got {type(sampler).__name__}")
    warnings.warn(
        f"{type(sampler).__name__} does not subclass replaystore.stream.Sampler; structural samplers are "
        "deprecated and will be refused in the next release: subclass Sampler (its abilities have no-op defaults)",
        DeprecationWarning,
        stacklevel=3,
    )
    return LegacySampler(sampler)


class _Passes(Sampler):
    """Without replacement: the global rows of a step continue the epoch's sequence pass 0, pass 1, ...
    of the source's order, and each rank reads its slice of them. A step's global rows therefore depend
    on (seed, epoch, cursor, total) only, never on the world size or the DataLoader workers."""

    without_replacement = True

    def order(self, draw: Draw, pass_: int) -> np.ndarray:
        raise NotImplementedError

    def positions(self, draw: Draw) -> tuple[np.ndarray, None]:
        return pass_positions(draw.cursor + draw.offset, draw.count, draw.n, lambda p: self.order(draw, p)), None


@dataclass
class Sequential(_Passes):
    """Rows in storage order; each epoch reads every row once. A single rank reads one forward scan;
    several ranks read interleaved slices of it, so every global batch is the same at any world size."""

    pure_draws = True

    def positions(self, draw: Draw) -> tuple[np.ndarray, None]:
        start = (draw.cursor + draw.offset) % draw.n if draw.n else 0
        if start + draw.count <= draw.n:  # the common case: no wrap-around, no order array
            return np.arange(start, start + draw.count, dtype=np.int64), None
        return super().positions(draw)

    def order(self, draw: Draw, pass_: int) -> np.ndarray:
        return np.arange(draw.n, dtype=np.int64)


@dataclass
class Shuffled(_Passes):
    """A seeded permutation per epoch (and per pass); every row exactly once per pass."""

    pure_draws = True  # the cached permutation is a function of the draw
    _cache: dict[tuple[int, int, int, int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def order(self, draw: Draw, pass_: int) -> np.ndarray:
        key = (draw.n, draw.seed, draw.epoch, draw.source, pass_)
        if key not in self._cache:
            self._cache.clear()  # one epoch at a time; a wrapped source needs two passes at most
            self._cache[key] = permutation(draw.n, draw.seed, draw.epoch, draw.source, pass_)
        return self._cache[key]


@dataclass
class Uniform(Sampler):
    """Uniform with replacement: each step's rows drawn independently."""

    pure_draws = True

    def positions(self, draw: Draw) -> tuple[np.ndarray, None]:
        rows = rng(draw.seed, draw.epoch, draw.source, draw.step, _UNIFORM).integers(0, draw.n, draw.total)
        return rows[draw.offset : draw.offset + draw.count].astype(np.int64), None


@dataclass
class Prioritized(Sampler):
    """Probability ∝ priority^alpha, with importance weights (N·P)^-beta normalised to ≤ 1.

    Draws descend a sum tree over priority^alpha (`sumtree.SumTree`): a batch of k rows costs
    O(k log n), an update of k priorities O(k log n), and an epoch's start O(n) to build the tree.
    beta anneals linearly from `beta` to `beta_end` over `beta_steps` global steps. Priority updates
    arrive in batches (`update`) stamped with the step they take effect at; `base` holds the
    priorities every consumed step has already seen, the tree the ones the reader is drawing with.
    """

    alpha: float = 0.6
    beta: float = 0.4
    beta_end: float = 1.0
    beta_steps: int = 10_000
    eps: float = 1e-6
    default_priority: float = 1.0
    draws_ahead = False  # a step's draw must see the updates of the steps before it
    keeps_priorities = True
    base: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    log: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    _tree: SumTree | None = field(default=None, repr=False)  # over base^alpha plus the applied updates
    _applied: int = field(default=0, repr=False)  # log entries already applied to the tree

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "beta_end", "eps", "default_priority"):
            value = getattr(self, name)
            if not is_finite_number(value) or value < 0:
                raise ValidationError(name, f"must be a finite number ≥ 0, got {value!r}")
        if not (self.beta <= 1 and self.beta_end <= 1):
            raise ValidationError("beta", "importance exponents must be ≤ 1")
        if not isinstance(self.beta_steps, int) or self.beta_steps < 1:
            raise ValidationError("beta_steps", f"must be an integer ≥ 1, got {self.beta_steps!r}")

    def reset(self, n: int, priorities: np.ndarray | None = None) -> None:
        """Start an epoch from stored priorities, or keep ours while the snapshot keeps its size."""
        if priorities is not None or len(self.base) != n:
            stored = np.full(n, np.nan) if priorities is None else np.array(priorities, dtype=np.float64)
            self.base = np.where(np.isnan(stored), self.default_priority, stored)  # unseen rows: default
            self.log = []  # positions of pending updates referred to the previous snapshot
        self._rebuild()

    def _rebuild(self) -> None:
        """The tree of `base`, no update applied: the same bits as any run that reached `base`."""
        self._tree = SumTree(self.base**self.alpha) if len(self.base) else None
        self._applied = 0

    def update(self, positions: np.ndarray, losses: np.ndarray, at_step: int) -> None:
        """Deprecated name of `update_priority`."""
        warnings.warn("Prioritized.update is deprecated: use update_priority", DeprecationWarning, stacklevel=2)
        self.update_priority(positions, losses, at_step)

    def update_priority(self, positions: np.ndarray, losses: np.ndarray, at_step: int) -> None:
        """Queue new priorities |loss| + eps for rows, effective from global step `at_step`."""
        positions = np.array(positions, dtype=np.int64).reshape(-1)  # a copy: the log outlives the caller's batch
        values = np.abs(np.asarray(losses, dtype=np.float64).reshape(-1)) + self.eps
        if positions.shape != values.shape:
            raise ValidationError("losses", f"need one loss per row: {len(positions)} rows, {len(values)} losses")
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self.base)):
            raise ValidationError("positions", f"must be rows of the source's snapshot (0..{len(self.base) - 1})")
        if not np.isfinite(values).all():
            raise ValidationError("losses", "must be finite")
        self.log.append((at_step, positions, values))

    def consumed(self, global_step: int) -> None:
        """Fold updates every consumed step has seen into `base` (what a checkpoint stores)."""
        keep = []
        for stamp, positions, values in self.log:
            if stamp <= global_step:
                self.base[positions] = values
            else:
                keep.append((stamp, positions, values))
        self._applied -= len(self.log) - len(keep)
        self.log = keep

    def positions(self, draw: Draw) -> tuple[np.ndarray, np.ndarray]:
        if self._tree is None and len(self.base) == draw.n:  # unpickled: the tree stayed behind
            self._rebuild()
        if self._tree is None or self._tree.n != draw.n:
            raise ValidationError("priorities", f"source {draw.source}: sampler not reset to the snapshot's {draw.n} rows")
        tree, log = self._tree, list(self.log)
        while self._applied < len(log) and log[self._applied][0] <= draw.global_step:
            _, positions, values = log[self._applied]
            tree.update(positions, values**self.alpha)
            self._applied += 1
        total = tree.total
        if not total > 0:
            raise ValidationError("priorities", f"source {draw.source}: every priority is 0, nothing can be drawn")
        u = rng(draw.seed, draw.epoch, draw.source, draw.step, _PRIORITIZED).random(draw.total)[draw.offset : draw.offset + draw.count]
        rows = tree.find(u * total)
        frac = min(1.0, draw.global_step / self.beta_steps)
        beta = self.beta + frac * (self.beta_end - self.beta)
        return rows, (tree.weights(rows) / tree.min) ** (-beta)  # (N·P / N·P_min)^-beta: the max weight is 1

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (to DataLoader or Ray workers) leave the tree behind: it is several times the priorities'
        size, and rebuilding it from `base` and replaying the log gives the same bits."""
        return {**self.__dict__, "_tree": None, "_applied": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Ray hands unpickled numpy arrays out read-only (zero-copy from its object store); `base` is written to."""
        self.__dict__.update(state)
        self.base = np.array(self.base)  # a writable copy

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.copy(), "log": [(s, p.copy(), v.copy()) for s, p, v in self.log]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = np.asarray(state["base"], dtype=np.float64).copy()
        self.log = [(int(s), np.asarray(p), np.asarray(v)) for s, p, v in state["log"]]
        self._rebuild()


@dataclass
class Curriculum(Sampler):
    """Curriculum pacing: rows whose difficulty percentile ≤ the competence c(t) of the global step,
    drawn by `replaystore.curriculum.CurriculumSampler` (without replacement within passes).

    That sampler is sequential in steps, so the stream feeds it every global step in order — in each
    DataLoader worker too, dropping other workers' rows — and the sequence is the same for any number
    of workers. Its difficulty array must follow the source's snapshot row order.
    """

    curriculum: CurriculumSampler
    step_sequential = True
    draws_ahead = False

    @property
    def next_step(self) -> int:
        return self.curriculum.next_step

    def positions(self, draw: Draw) -> tuple[np.ndarray, None]:
        rows = np.asarray(self.curriculum.indices(draw.global_step, draw.total), dtype=np.int64)
        if len(rows) and rows.max() >= draw.n:
            raise ValidationError("curriculum", f"difficulty covers rows beyond the source's {draw.n} rows")
        return rows[draw.offset : draw.offset + draw.count], None

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.curriculum.load_state_dict(state["curriculum"])
