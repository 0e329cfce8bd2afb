"""Selectors rank the candidates of one class: the first of the order is kept first and cut last.

Each is a small named part (as in Avalanche's storage policies and Reverb's selectors), chosen by
name in a buffer's settings: herding (iCaRL), closest-to-centre, k-center (coverage of the class),
random (seeded) and reservoir (a uniform sample of everything a stream ever offered, however it
was batched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from replaystore.errors import ValidationError

EPSILON = 1e-8  # added to norms before dividing, as iCaRL/PyCIL do, so zero vectors stay finite


@dataclass(frozen=True)
class Candidates:
    """What a selector sees of one class: ids, and features when it ranks by them."""

    class_id: int
    sample_ids: np.ndarray
    features: np.ndarray | None = None


class Selector(Protocol):
    name: ClassVar[str]
    needs_features: ClassVar[bool]

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        """Indices of the best `min(k, n)` candidates, best first."""
        ...


def _normalised(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 copy of the features, each row divided by its L2 norm in place (one N×D allocation)."""
    v = (
        torch.tensor(np.asarray(features), dtype=torch.float32)
        if not isinstance(features, torch.Tensor)
        else features.detach().to("cpu", torch.float32, copy=True)
    )
    if v.ndim != 2:
        raise ValidationError("features", f"must be a 2-D array (one vector per candidate), got shape {tuple(v.shape)}")
    norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)  # NaN/inf anywhere in a row shows here, in O(N)
    if not bool(torch.isfinite(norms).all()):
        raise ValidationError("features", "must be finite (no NaN or inf), with L2 norms that fit in float32")
    return v.div_(norms.add_(EPSILON))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` intra-op threads (None: leave torch's setting), restoring it after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def herding_order(features: np.ndarray | torch.Tensor, k: int, threads: int | None = 1) -> np.ndarray:
    """iCaRL herding: greedily add the sample that keeps the running mean closest to the class mean.

    Features are L2-normalised first. Step `t` minimises ‖μ − (S + v)/t‖² over the unpicked v,
    which expands to ‖v‖²/t − 2·v·(μ − S/t) plus a constant, so each step is one mat-vec over the
    N×D features: O(N·D) memory and O(k·N·D) time, never an N×N matrix. Asking for more than N
    samples returns all N (PyCIL crashed there, its issue #41).

    The loop runs on `threads` torch threads (default 1): splitting one mat-vec per pick costs a
    fork-join per pick, which on a shared CPU waits for the slowest core (measured here: 5,000
    candidates 10× slower on 2 threads than on 1). None keeps torch's own setting.
    """
    v = _normalised(features)
    n = v.shape[0]
    k = max(0, min(int(k), n))
    mean = v.mean(dim=0)
    sq_norms = torch.linalg.vector_norm(v, dim=1).square_()  # +inf once picked: never picked again
    running = torch.zeros_like(mean)
    order = np.empty(k, dtype=np.int64)
    with _torch_threads(threads):
        for step in range(1, k + 1):
            scores = torch.mv(v, mean - running / step).mul_(-2.0).add_(sq_norms, alpha=1.0 / step)
            i = int(torch.argmin(scores))
            order[step - 1] = i
            sq_norms[i] = torch.inf
            running += v[i]
    return order


def closest_to_centre_order(features: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Samples whose L2-normalised feature lies nearest the class mean, nearest first (ties by index)."""
    v = _normalised(features)
    dist = torch.cdist(v, v.mean(dim=0, keepdim=True), compute_mode="donot_use_mm_for_euclid_dist").squeeze(1).numpy()
    return np.argsort(dist, kind="stable")[: max(0, int(k))]


def k_center_order(features: np.ndarray | torch.Tensor, k: int, threads: int | None = 1) -> np.ndarray:
    """Greedy k-center (farthest-first traversal, the core-set of Sener & Savarese 2018).

    Features are L2-normalised first. The first pick lies nearest the class mean; each next pick is
    the sample farthest from everything picked so far, so every prefix of the order covers the
    class (its boundary cases too) as well as greedy can, and a cut keeps a covering set. Herding
    instead keeps the samples whose mean matches the class mean: typical ones, which is what a
    nearest-mean classifier needs but leaves a trained head few of the cases near other classes.
    One mat-vec per pick: O(N·D) memory, O(k·N·D) time; ties go to the lowest index.
    """
    v = _normalised(features)
    n = v.shape[0]
    k = max(0, min(int(k), n))
    order = np.empty(k, dtype=np.int64)
    if k == 0:
        return order
    sq_norms = torch.linalg.vector_norm(v, dim=1).square_()
    with _torch_threads(threads):
        centre = v.mean(dim=0)
        nearest = torch.full((n,), torch.inf)  # squared distance to the closest pick so far
        i = int(torch.argmin(sq_norms - 2.0 * torch.mv(v, centre)))  # ‖v − μ‖² up to a constant
        for step in range(k):
            order[step] = i
            torch.minimum(nearest, (sq_norms - 2.0 * torch.mv(v, v[i]) + sq_norms[i]).clamp_(min=0.0), out=nearest)
            nearest[i] = -1.0  # picked: never the farthest again
            i = int(torch.argmax(nearest))
    return order


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash (SplitMix64 finaliser), vectorised; wraps modulo 2**64 by design."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _u64(value: int) -> np.ndarray:
    return np.array([value % (1 << 64)], dtype=np.uint64)


@dataclass(frozen=True)
class Herding:
    name: ClassVar[str] = "herding"
    needs_features: ClassVar[bool] = True
    seed: int = 0

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        assert candidates.features is not None
        return herding_order(candidates.features, k)


@dataclass(frozen=True)
class ClosestToCentre:
    name: ClassVar[str] = "closest_to_centre"
    needs_features: ClassVar[bool] = True
    seed: int = 0

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        assert candidates.features is not None
        return closest_to_centre_order(candidates.features, k)


@dataclass(frozen=True)
class KCenter:
    name: ClassVar[str] = "k_center"
    needs_features: ClassVar[bool] = True
    seed: int = 0

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        assert candidates.features is not None
        return k_center_order(candidates.features, k)


@dataclass(frozen=True)
class Random:
    """A seeded permutation of the candidates offered together (per class, so classes differ)."""

    name: ClassVar[str] = "random"
    needs_features: ClassVar[bool] = False
    seed: int = 0

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed % (1 << 64), candidates.class_id % (1 << 64)])
        return rng.permutation(len(candidates.sample_ids))[: max(0, int(k))]


@dataclass(frozen=True)
class Reservoir:
    """Bottom-k of a seeded hash of (class, sample id): a uniform sample of every id ever offered.

    Keeping the k smallest keys is reservoir sampling without a counter, and a cut to fewer rows
    keeps a uniform sample; the same ids give the same buffer whatever the batch sizes were.
    """

    name: ClassVar[str] = "reservoir"
    needs_features: ClassVar[bool] = False
    seed: int = 0

    def order(self, candidates: Candidates, k: int) -> np.ndarray:
        salt = _splitmix64(_splitmix64(_u64(self.seed)) ^ _u64(candidates.class_id))
        keys = _splitmix64(candidates.sample_ids.astype(np.int64).view(np.uint64) ^ salt)
        return np.argsort(keys, kind="stable")[: max(0, int(k))]


SELECTORS: dict[str, type[Herding] | type[ClosestToCentre] | type[KCenter] | type[Random] | type[Reservoir]] = {
    s.name: s for s in (Herding, ClosestToCentre, KCenter, Random, Reservoir)
}


def make_selector(name: str, seed: int = 0) -> Selector:
    if name not in SELECTORS:
        raise ValidationError("selector", f"must be one of {sorted(SELECTORS)}, got {name!r}")
    return SELECTORS[name](seed=seed)
