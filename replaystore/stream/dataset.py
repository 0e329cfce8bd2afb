"""The stream: a torch `IterableDataset` of whole batches (dicts of tensors) from one or more sources.

Guarantees, before knobs (after Mosaic Streaming):
- Deterministic: the rows of every global batch are a pure function of (seed, epoch, step) and the
  sources' snapshots — the same for any number of ranks and DataLoader workers.
- Exactly once: in an epoch, the rows of the epoch-defining source (default: the first) are seen once
  across all ranks and workers when it samples without replacement; the epoch ends when they are spent.
- Resumable: `state_dict()` after k batches, `load_state_dict()` in a new process, and iteration yields
  exactly the batches k+1, ... of the uninterrupted run — mixtures and prioritized sources included.
- Snapshot isolation: each epoch reads every table at one version, pinned (`store.pin`) while the epoch
  runs; writers committing meanwhile are seen by the next epoch.

Use it directly (`for batch in stream`: background prefetch in a thread) or through `stream.loader(...)`
(a DataLoader with spawn workers; Lance is not fork-safe). Each batch carries `_source` (source index),
`_position` (row in the source's snapshot) and `_weight` (importance weight, 1 unless prioritized).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from replaystore.checks import integer
from replaystore.errors import ValidationError
from replaystore.stream.mixing import Mixing
from replaystore.stream.order import cursors, rank_share, rank_stripes, worker_steps
from replaystore.stream.priorities import load_priorities
from replaystore.stream.samplers import Draw, Prioritized
from replaystore.stream.snapshots import MAX_READ_AHEAD, LanceSnapshot, Snapshot
from replaystore.stream.sources import CHUNK_BYTES, READ_AHEAD, Source
from replaystore.stream.tensors import as_tensors, concat, cut

_MAX_STEPS = 1 << 24
_END = object()


def _meta(cells: list[tuple[int, np.ndarray, np.ndarray | None]]) -> dict[str, np.ndarray]:
    """Per row of (source, positions, weights) cells in batch order: its source, its position in the
    source's snapshot and its importance weight (1 unless the sampler gives one). Built once per
    chunk and split per batch: built per batch it was a fifth of a single-source epoch's Python calls."""
    counts = [len(pos) for _, pos, _ in cells]
    weights = [w for _, _, w in cells]
    return {
        "_source": np.repeat(np.array([i for i, _, _ in cells], dtype=np.int16), counts),
        "_position": np.concatenate([pos for _, pos, _ in cells]),
        "_weight": np.ones(sum(counts), np.float32) if all(w is None for w in weights) else np.concatenate(
            [np.ones(n, np.float32) if w is None else w.astype(np.float32) for n, w in zip(counts, weights)]
        ),
    }


def _split(value: Any, rows: list[int]) -> Sequence[Any]:
    """Consecutive runs of `rows` rows of a tensor (one call for all views) or of a list."""
    if isinstance(value, torch.Tensor):
        return value.split_with_sizes(rows)
    bounds = np.concatenate(([0], np.cumsum(rows))).tolist()
    return [value[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _resize(built: list[tuple[int, dict[str, Any] | None]]) -> int:
    """Steps per chunk that make about `CHUNK_BYTES`, from the bytes of the batches just built."""
    size = sum(v.nbytes for _, batch in built if batch for v in batch.values() if isinstance(v, torch.Tensor))
    per_step = max(size / len(built), 1.0)
    return int(min(MAX_READ_AHEAD, max(1, CHUNK_BYTES // per_step)))


@dataclass(frozen=True)
class Plan:
    """One epoch's layout: global rows per (step, source), and this rank's slice of them."""

    counts: np.ndarray
    cursors: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray
    stripe_start: np.ndarray  # per source: where this rank's stripe starts (sequential layout)
    stripe_cursors: np.ndarray  # per (step, source): this rank's rows before the step

    @property
    def steps(self) -> int:
        return len(self.counts)


def _distributed() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


class ReplayStream(IterableDataset):
    """Batches from `sources`, mixed by `mixing`, sharded by rank and worker, resumable."""

    def __init__(
        self,
        sources: Source | Sequence[Source],
        batch_size: int,
        *,
        mixing: Mixing | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        epoch_source: int = 0,
        steps_per_epoch: int | None = None,
        drop_last: bool = False,
        prefetch: int = 2,
        pin_memory: bool = False,
    ) -> None:
        self.sources = [sources] if isinstance(sources, Source) else list(sources)
        if not self.sources or not all(isinstance(s, Source) for s in self.sources):
            raise ValidationError("sources", "need at least one Source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValidationError("sources", f"source names must be unique, got {names}")
        if len(self.sources) > 1 and mixing is None:
            raise ValidationError("mixing", "several sources need a mixing policy (Proportions or ExactK)")
        self.batch_size = integer("batch_size", batch_size, 1)
        self.mixing = mixing
        self.seed = integer("seed", seed, 0)
        self._rank, self._world = rank, world_size
        if world_size is not None:
            integer("world_size", world_size, 1)
            if rank is None or not 0 <= rank < world_size:
                raise ValidationError("rank", f"must be in [0, {world_size}) when world_size is given, got {rank!r}")
        if not 0 <= epoch_source < len(self.sources):
            raise ValidationError("epoch_source", f"must index one of the {len(self.sources)} sources")
        self.epoch_source = epoch_source
        if steps_per_epoch is None and not self.sources[epoch_source].sampler.without_replacement:
            raise ValidationError(
                "steps_per_epoch", "the epoch-defining source samples with replacement, so give steps_per_epoch"
            )
        self.steps_per_epoch = None if steps_per_epoch is None else integer("steps_per_epoch", steps_per_epoch, 1)
        self.drop_last = bool(drop_last)
        self.prefetch = integer("prefetch", prefetch, 0)
        if pin_memory and not torch.cuda.is_available():
            raise ValidationError("pin_memory", "pinned memory needs a CUDA device; none is available")
        self.pin_memory = pin_memory
        self.epoch, self.step, self.global_base = 0, 0, 0
        self.versions: list[int | None] | None = None
        self._sampler_epoch = -1
        self._pins: contextlib.ExitStack | None = None
        self._lock = threading.Lock()
        self._active = False
        self._pre_state: dict[int, dict[int, Any]] = {}  # step → stateful samplers' state before it

    # -- topology -------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self._rank if self._rank is not None else (_distributed() or (0, 1))[0]

    @property
    def world_size(self) -> int:
        return self._world if self._world is not None else (_distributed() or (0, 1))[1]

    def for_rank(self, rank: int, world_size: int) -> ReplayStream:
        """A copy of this stream that reads `rank`'s share (what each Ray Train worker runs)."""
        if self._rank is not None or self._world is not None:
            raise ValidationError("rank", "this stream already has a fixed rank and world_size")
        mine = copy.copy(self)  # through __getstate__: no pins, a fresh lock
        integer("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValidationError("rank", f"must be in [0, {world_size}), got {rank!r}")
        mine._rank, mine._world = rank, world_size
        return mine

    # -- epochs and versions --------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` (call it in the main process before each epoch when using DataLoader workers)."""
        epoch = integer("epoch", epoch, 0)
        if epoch == self.epoch and self.versions is not None:
            return
        if epoch != self.epoch:
            if self.versions is not None:  # the previous epoch ran in workers: count its steps once
                self.global_base += self._plan().steps
            self.epoch, self.step = epoch, 0
        self._release()
        self._pin_versions()

    def _pin_versions(self) -> None:
        """Resolve each source's version for this epoch (rank 0's choice wins) and pin it."""
        versions = [s.resolve() for s in self.sources]
        if _distributed() is not None and self.world_size > 1:
            shared: list[Any] = [versions]
            torch.distributed.broadcast_object_list(shared, src=0)
            versions = shared[0]
        self._pins = contextlib.ExitStack()
        for source, version in zip(self.sources, versions):
            self._pins.enter_context(source.pinned(version))
        self.versions = versions

    def _release(self) -> None:
        if self._pins is not None:
            self._pins.close()
            self._pins = None

    def close(self) -> None:
        """Release the epoch's pins (also done when an epoch completes)."""
        self._release()

    def __getstate__(self) -> dict[str, Any]:  # pins and locks stay with the process that made them
        return {**self.__dict__, "_pins": None, "_lock": None, "_active": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the plan ------------------------------------------------------------------------

    def _snapshots(self) -> list[Snapshot]:
        assert self.versions is not None
        snaps = [s.open(v) for s, v in zip(self.sources, self.versions)]
        if self._sampler_epoch != self.epoch:
            for source, snap, version in zip(self.sources, snaps, self.versions):
                stored = None
                if isinstance(source.sampler, Prioritized) and source.store is not None:
                    stored = load_priorities(source.store, source, version)
                source.sampler.reset(snap.num_rows, stored)
            self._sampler_epoch = self.epoch
        for source, snap in zip(self.sources, snaps):
            if snap.num_rows == 0:
                raise ValidationError("sources", f"source '{source.name}' has no rows at version {self.versions}")
        return snaps

    def _counts(self, steps: int) -> np.ndarray:
        g = self.batch_size * self.world_size
        if self.mixing is None:
            return np.full((steps, 1), g, dtype=np.int64)
        return self.mixing.counts(steps, g, len(self.sources))

    def _plan(self, sizes: Sequence[int] | None = None) -> Plan:
        if self.steps_per_epoch is not None:
            counts = self._counts(self.steps_per_epoch)
        else:
            n = (sizes or [s.num_rows for s in self._snapshots()])[self.epoch_source]
            steps = -(-n // (self.batch_size * self.world_size)) + 1
            while True:
                counts = self._counts(steps)
                spent = np.cumsum(counts[:, self.epoch_source])
                if spent[-1] >= n:
                    break
                if steps > _MAX_STEPS:
                    raise ValidationError("mixing", f"source {self.epoch_source} gets no rows, so the epoch never ends")
                steps *= 2
            last = int(np.searchsorted(spent, n))
            counts = counts[: last + 1].copy()
            counts[last, self.epoch_source] -= int(spent[last] - n)
            if self.drop_last and counts[last].sum() < self.batch_size * self.world_size:
                counts = counts[:last]
        rows, offsets = rank_share(counts, self.world_size, self.rank)
        return Plan(counts, cursors(counts), rows, offsets, *rank_stripes(counts, self.world_size, self.rank))

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        if self.versions is None:
            self._pin_versions()
        return self._plan().steps

    # -- batches ---------------------------------------------------------------------------

    def _draw(self, plan: Plan, n: int, source: int, step: int) -> Draw:
        return Draw(
            n=n, seed=self.seed, epoch=self.epoch, source=source, step=step,
            global_step=self.global_base + step, cursor=int(plan.cursors[step, source]),
            total=int(plan.counts[step, source]), offset=int(plan.offsets[step, source]),
            count=int(plan.rows[step, source]),
            stripe=int(plan.stripe_start[source] + plan.stripe_cursors[step, source]),
        )  # fmt: skip

    def _catch_up(self, plan: Plan, n: int, source: int, step: int) -> None:
        """Feed a step-sequential sampler the steps other workers read, so all workers agree."""
        sampler = self.sources[source].sampler
        for earlier in range(max(sampler.next_step - self.global_base, 0), step):  # type: ignore[attr-defined]
            if plan.counts[earlier, source]:
                sampler.positions(self._draw(plan, n, source, earlier))

    def _joint(self, plan: Plan, n: int, source: int, steps: list[int]) -> list[np.ndarray] | None:
        """Positions of consecutive `steps` drawn at once (then split per step) when the sampler's steps
        continue one another (`Sequential`): one draw per chunk instead of one per step."""
        if not getattr(self.sources[source].sampler, "contiguous", False) or steps[-1] - steps[0] != len(steps) - 1:
            return None
        bounds = [0, *np.cumsum(plan.rows[steps[0] : steps[-1] + 1, source]).tolist()]
        draw = self._draw(plan, n, source, steps[0])
        draw.count = bounds[-1]
        positions = self.sources[source].sampler.positions(draw)[0] if draw.count else np.empty(0, np.int64)
        return [positions[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def read_ahead(self) -> int:
        """Steps whose rows the first chunk reads together (one read and one conversion per source per
        chunk; later chunks are sized by `_resize`). 1 when a sampler needs per-step feedback
        (priorities) or is step-sequential (curriculum)."""
        feedback = any(isinstance(s.sampler, Prioritized) or getattr(s.sampler, "stateful", False) for s in self.sources)
        return 1 if feedback else READ_AHEAD

    def _chunks(self, plan: Plan, snaps: list[Snapshot], steps: np.ndarray) -> Iterator[list[tuple[int, dict[str, Any] | None]]]:
        """This rank's batches for `steps`, a chunk at a time. After the first chunk each one holds about
        `CHUNK_BYTES` of batches (at most `MAX_READ_AHEAD` steps): small rows get long chunks, so the
        per-chunk work is paid rarely, and wide rows (tokens, activations) short ones, so memory stays bounded."""
        at, size = 0, self.read_ahead
        adaptive = size > 1
        while at < len(steps):
            built = self._chunk(plan, snaps, steps[at : at + size].tolist())
            at += size
            yield built
            if adaptive:
                size = _resize(built)

    def _chunk(self, plan: Plan, snaps: list[Snapshot], steps: list[int]) -> list[tuple[int, dict[str, Any] | None]]:
        """This rank's batches for `steps` (None for a step where it has no rows: a short last batch)."""
        drawn: list[list[tuple[np.ndarray, np.ndarray | None]]] = [[] for _ in steps]
        stateful = [getattr(source.sampler, "stateful", False) for source in self.sources]
        joint = [self._joint(plan, snap.num_rows, i, steps) for i, snap in enumerate(snaps)]
        with self._lock:
            for k, step in enumerate(steps):
                for i, (source, snap) in enumerate(zip(self.sources, snaps)):
                    if joint[i] is not None:
                        drawn[k].append((joint[i][k], None))
                        continue
                    if stateful[i]:
                        self._catch_up(plan, snap.num_rows, i, step)
                        self._pre_state.setdefault(step, {})[i] = source.sampler.state_dict()  # for checkpoints
                    if plan.rows[step, i] == 0:
                        drawn[k].append((np.empty(0, np.int64), None))
                        continue
                    drawn[k].append(source.sampler.positions(self._draw(plan, snap.num_rows, i, step)))
        sizes = [[len(d[i][0]) for d in drawn] for i in range(len(snaps))]
        runs = []  # per source: each step's rows as views of the chunk's record batches
        for i, snap in enumerate(snaps):
            wanted = np.concatenate([d[i][0] for d in drawn])
            pieces = snap.read_arrays(wanted) if len(wanted) else []
            runs.append(cut(pieces, sizes[i]))
        first = next((view for run in runs for step in run for view in step), {})
        rows = [sum(len(cell[0]) for cell in step) for step in drawn]
        cells = [(i, *cell) for step in drawn for i, cell in enumerate(step)]
        meta = {key: _split(value, rows) for key, value in as_tensors(_meta(cells), self.pin_memory).items()}
        if len(snaps) > 1 and not any(key.endswith("_lengths") for key in first):  # padded widths stay per batch
            return self._assemble(steps, runs, rows, meta)
        out: list[tuple[int, dict[str, Any] | None]] = []
        for k, step in enumerate(steps):
            parts = [view for i in range(len(snaps)) for view in runs[i][k]]
            out.append((step, {**self._finish(parts), **{key: value[k] for key, value in meta.items()}} if parts else None))
        return out

    def _assemble(
        self, steps: list[int], runs: list[list[list[dict[str, Any]]]], rows: list[int], meta: dict[str, Sequence[Any]]
    ) -> list[tuple[int, dict[str, Any] | None]]:
        """A mixture's chunk with fixed-width columns: every column copied once for the whole chunk,
        batch after batch and source after source, and each batch a slice of it (few large copies
        instead of one small copy per batch, source and column)."""
        views = [view for k in range(len(steps)) for run in runs for view in run[k]]
        if not views:
            return [(step, None) for step in steps]
        columns = as_tensors(concat(views, self.pin_memory) if len(views) > 1 else dict(views[0]), self.pin_memory)
        split = {**{key: _split(value, rows) for key, value in columns.items()}, **meta}
        return [
            (step, {key: value[k] for key, value in split.items()} if rows[k] else None) for k, step in enumerate(steps)
        ]

    def _finish(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """One batch's columns: a single piece stays a view; several are copied once, straight into place.
        Padded columns are cut to the batch's own longest row (a piece is padded to its read's)."""
        batch = dict(parts[0]) if len(parts) == 1 else concat(parts, self.pin_memory)
        for key in [k for k in batch if f"{k}_lengths" in batch]:
            lengths = batch[f"{key}_lengths"]
            batch[key] = batch[key][:, : int(lengths.max()) if len(lengths) else 0]
        return as_tensors(batch, self.pin_memory)

    def _produce(self, plan: Plan, snaps: list[Snapshot], steps: np.ndarray) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Batches in step order; with `prefetch` > 0 a thread reads ahead into a bounded queue.

        The queue holds whole chunks (`_chunks`; `prefetch / read_ahead` of them, at least one):
        handing batches over one by one made the consumer wake and take the GIL from the Python-busy
        reader once per batch, which cost a 3-source mixture ~10% of its throughput."""
        if self.prefetch == 0:
            for built in self._chunks(plan, snaps, steps):
                yield from built
            return
        out: queue.Queue[Any] = queue.Queue(maxsize=max(1, -(-self.prefetch // self.read_ahead)))
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    out.put(item, timeout=0.1)
                    return True
            return False

        def work() -> None:
            try:
                for built in self._chunks(plan, snaps, steps):
                    if not put(built):
                        return
                put(_END)
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        thread = threading.Thread(target=work, name="replaystore-prefetch", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        return self.iter_worker(*(info.id, info.num_workers) if info is not None else (0, 1), in_main=info is None)

    def iter_worker(self, worker: int, num_workers: int, in_main: bool = True) -> Iterator[dict[str, Any]]:
        """The batches DataLoader worker `worker` of `num_workers` yields (every step ≡ worker mod n)."""
        if not 0 <= worker < num_workers:
            raise ValidationError("worker", f"must be in [0, {num_workers}), got {worker}")
        if self.versions is None:
            if not in_main:
                raise ValidationError("set_epoch", "call stream.set_epoch(epoch) in the main process before iterating with workers")
            self._pin_versions()
        snaps = self._snapshots()
        plan = self._plan([s.num_rows for s in snaps])
        for i, snap in enumerate(snaps):
            if isinstance(snap, LanceSnapshot) and plan.rows[:, i].sum() > snap.num_rows:
                snap.retain()  # read more than once this epoch: decode it once
        steps = worker_steps(plan.steps, num_workers, worker, start=self.step)
        self._active = in_main
        try:
            for step, batch in self._produce(plan, snaps, steps):
                self.step = step + 1
                with self._lock:
                    self._pre_state = {k: v for k, v in self._pre_state.items() if k >= self.step}
                    for source in self.sources:
                        if isinstance(source.sampler, Prioritized):
                            source.sampler.consumed(self.global_base + step)
                if batch is not None:
                    yield batch
        finally:
            self._active = False
        if in_main and self.step >= plan.steps:  # the epoch is complete: the next one re-pins
            self._release()
            self.global_base += plan.steps
            self.epoch, self.step, self.versions, self._pre_state = self.epoch + 1, 0, None, {}

    # -- feedback and checkpoints ----------------------------------------------------------

    @property
    def priority_lag(self) -> int:
        """Steps after the current one at which an update takes effect: past every prefetched batch."""
        return self.prefetch + 2 if self.prefetch else 1

    def update_priorities(self, batch: dict[str, Any], losses: Any) -> None:
        """Feed per-row losses of a yielded batch back to its prioritized sources (batched, in-process)."""
        if not self._active:
            raise ValidationError("update_priorities", "only while this stream is iterated in this process (num_workers=0)")
        loss = np.asarray(losses.detach().cpu() if hasattr(losses, "detach") else losses, dtype=np.float64).reshape(-1)
        index = batch["_source"].numpy()
        if loss.shape != index.shape:
            raise ValidationError("losses", f"need one loss per row: batch has {len(index)} rows, got {len(loss)} losses")
        at = self.global_base + self.step - 1 + self.priority_lag
        with self._lock:
            for i, source in enumerate(self.sources):
                mask = index == i
                if isinstance(source.sampler, Prioritized) and mask.any():
                    source.sampler.update(batch["_position"].numpy()[mask], loss[mask], at)

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        """Where the stream stands. `step`: batches this rank consumed this epoch, when a DataLoader
        with workers iterated it (the main process cannot see their progress)."""
        return {
            "epoch": self.epoch,
            "step": self.step if step is None else integer("step", step, 0),
            "global_base": self.global_base,
            "versions": self.versions,
            "seed": self.seed,
            "global_batch": self.batch_size * self.world_size,
            "sources": [s.name for s in self.sources],
            "samplers": self._sampler_states(),
        }

    def _sampler_states(self) -> list[dict[str, Any]]:
        """Sampler states as of the next batch to consume, not as far as prefetch has drawn."""
        with self._lock:
            ahead = self._pre_state.get(self.step, {})
            return [ahead.get(i) or s.sampler.state_dict() for i, s in enumerate(self.sources)]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` stopped (same seed, sources and global batch size)."""
        for key, mine in (
            ("seed", self.seed),
            ("global_batch", self.batch_size * self.world_size),
            ("sources", [s.name for s in self.sources]),
        ):
            if state.get(key) != mine:
                raise ValidationError(key, f"checkpoint has {state.get(key)!r}, this stream {mine!r}: cannot resume")
        self._release()
        self.epoch, self.step, self.global_base = int(state["epoch"]), int(state["step"]), int(state["global_base"])
        self.versions = state["versions"]
        if self.versions is not None:
            self._pins = contextlib.ExitStack()
            for source, version in zip(self.sources, self.versions):
                self._pins.enter_context(source.pinned(version))
        for source, sampler_state in zip(self.sources, state["samplers"]):
            source.sampler.load_state_dict(sampler_state)
        loaded = any(len(st.get("base", ())) for st in state["samplers"])
        self._sampler_epoch = self.epoch if loaded else -1  # a loaded priority state must not be reset

    def loader(self, num_workers: int = 0, **settings: Any) -> DataLoader:
        """A DataLoader over the stream: batches pass through whole; workers use spawn (Lance is not fork-safe)."""
        if settings.get("persistent_workers"):
            raise ValidationError(
                "persistent_workers", "each epoch starts fresh workers: persistent ones would not see set_epoch and repeat the epoch"
            )
        if num_workers and self.versions is None:
            self._pin_versions()
        extra = {"multiprocessing_context": "spawn"} if num_workers else {}
        return DataLoader(self, batch_size=None, num_workers=num_workers, **extra, **settings)
