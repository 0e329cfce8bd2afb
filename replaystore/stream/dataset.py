"""The stream: a torch `IterableDataset` of whole batches (dicts of tensors) from one or more sources.

Guarantees, before knobs (after Mosaic Streaming):
- Deterministic: the rows of every global batch are a pure function of (seed, epoch, step), the
  sources' snapshots and the global batch size — the same for any number of ranks and DataLoader workers.
- Exactly once: in an epoch, the rows of the epoch-defining source (default: the first) are seen once
  across all ranks and workers when it samples without replacement; the epoch ends when they are spent.
- Resumable: `state_dict()` after k batches, `load_state_dict()` in a new process, and iteration yields
  exactly the batches k+1, ... of the uninterrupted run — mixtures and prioritized sources included,
  at another world size too (another global batch size: one without-replacement source only).
- Snapshot isolation: each epoch reads every table at one version, pinned (`store.pin`) while the epoch
  runs; writers committing meanwhile are seen by the next epoch. A pin whose version is still the
  latest when its epoch ends is kept for the next epoch (`pins.py`); `close()` releases it.

Use it directly (`for batch in stream`: background prefetch in a thread) or through `stream.loader(...)`
(a DataLoader with spawn workers; Lance is not fork-safe). Each batch carries `_source` (source index),
`_position` (row in the source's snapshot) and `_weight` (importance weight, 1 unless prioritized).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from replaystore.checks import integer
from replaystore.errors import ValidationError
from replaystore.memory import keep_freed_memory
from replaystore.stream.batches import Batch, Built, Cell, batches, chunk_steps
from replaystore.stream.mixing import Mixing
from replaystore.stream.order import worker_steps
from replaystore.stream.pins import Pins
from replaystore.stream.plan import Plan, cell_plans, draw, epoch_counts, forward_runs, plan_epoch, step_counts
from replaystore.stream.priorities import load_priorities
from replaystore.stream.samplers import Draw, Sequential
from replaystore.stream.shipping import Packed, Shipped, Slots, pack
from replaystore.stream.snapshots import Kept, LanceSnapshot, Snapshot
from replaystore.stream.sources import READ_AHEAD, Source, StoreSource
from replaystore.stream.workers import WorkerState

_END = object()


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
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """`transform`: applied to every batch where it is made (the prefetch thread, or each DataLoader
        worker of `loader(num_workers=k)`, which is where per-row decoding such as images pays off)."""
        keep_freed_memory()
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
            raise ValidationError("steps_per_epoch", "the epoch-defining source samples with replacement, so give steps_per_epoch")
        self.steps_per_epoch = None if steps_per_epoch is None else integer("steps_per_epoch", steps_per_epoch, 1)
        self.drop_last = bool(drop_last)
        self.prefetch = integer("prefetch", prefetch, 0)
        if pin_memory and not torch.cuda.is_available():
            raise ValidationError("pin_memory", "pinned memory needs a CUDA device; none is available")
        self.pin_memory = pin_memory
        if transform is not None and not callable(transform):
            raise ValidationError("transform", f"must be a function of a batch, got {type(transform).__name__}")
        self.transform = transform
        self.epoch, self.step, self.global_base = 0, 0, 0
        self.versions: list[int | None] | None = None
        self._sampler_epoch = -1
        self._pins = Pins()
        self._lock = threading.Lock()  # samplers' state, shared by the prefetch thread and the consumer
        self._pure = all(s.sampler.pure_draws for s in self.sources)  # no sampler state: no lock needed
        self._active = False
        self._pre_state: dict[int, dict[int, Any]] = {}  # step → step-sequential samplers' state before it
        self._start = np.zeros(len(self.sources), np.int64)  # rows of each source used before step 0 (elastic resume)
        self._current: Plan | None = None  # the plan the main process iterates
        self._shared: WorkerState | None = None  # set in `stream.loader`'s workers: the epoch to read
        self._slots: Slots | None = None  # a `stream.loader` worker's reused shared buffers
        self._generation = 0  # checkpoints loaded: a loader's persistent workers restart after one
        self._kept = [Kept() for _ in self.sources]  # passes decoded whole, for later epochs of their version
        self._held: list[tuple[int | None, Snapshot] | None] = [None] * len(self.sources)  # immutable snapshots by version

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
            self.epoch, self.step, self._start, self._current = epoch, 0, np.zeros_like(self._start), None
        self._pin_versions()

    def _pin_versions(self) -> None:
        """Resolve each source's version for this epoch (rank 0's choice wins) and pin it (a pin the
        last epoch kept on the same version is taken over)."""
        versions = [s.resolve() for s in self.sources]
        if _distributed() is not None and self.world_size > 1:
            shared: list[Any] = [versions]
            torch.distributed.broadcast_object_list(shared, src=0)
            versions = shared[0]
        self._pins.hold(self.sources, versions)
        self.versions = versions

    def close(self) -> None:
        """Release the pins this stream holds (an epoch's end releases those of superseded versions;
        garbage collection and interpreter exit release the rest) and the rows it keeps for later epochs."""
        self._pins.release()
        for kept in self._kept:
            kept.clear()
        self._held = [None] * len(self.sources)

    def __getstate__(self) -> dict[str, Any]:  # pins, locks and kept rows stay with the process that made them
        fresh = {"_kept": [Kept() for _ in self.sources], "_held": [None] * len(self.sources)}
        return {**self.__dict__, **fresh, "_pins": None, "_lock": None, "_active": False, "_current": None, "_slots": None}

    def __setstate__(self, state: dict[str, Any]) -> None:  # a DataLoader or Ray worker's copy
        keep_freed_memory()
        self.__dict__.update(state)
        self._lock, self._pins = threading.Lock(), Pins()

    # -- the plan ------------------------------------------------------------------------

    def _snapshots(self) -> list[Snapshot]:
        assert self.versions is not None
        snaps = [self._open(i, v) for i, v in enumerate(self.versions)]
        if self._sampler_epoch != self.epoch:
            for source, snap, version in zip(self.sources, snaps, self.versions):
                stored = None
                if source.sampler.keeps_priorities and isinstance(source, StoreSource):
                    stored = load_priorities(source.store, source, version)
                source.sampler.reset(snap.num_rows, stored)
            self._sampler_epoch = self.epoch
        for source, snap in zip(self.sources, snaps):
            if snap.num_rows == 0:
                raise ValidationError("sources", f"source '{source.name}' has no rows at version {self.versions}")
        return snaps

    def _open(self, i: int, version: int | None) -> Snapshot:
        """Source `i` at `version`. A snapshot without read state (an in-memory or filtered table, the hot
        tier) is opened once per version and reused by every epoch and `len()`: a filtered source is
        read and filtered once, not once per epoch. A Lance snapshot carries its scan, so each call gets
        its own (what it decodes whole is shared through `Kept`)."""
        held = self._held[i]
        if held is not None and held[0] == version:
            return held[1]
        snap = self.sources[i].open(version)
        self._held[i] = None if isinstance(snap, LanceSnapshot) else (version, snap)
        return snap

    def _plan(self, sizes: Sequence[int] | None = None) -> Plan:
        g, k = self.batch_size * self.world_size, len(self.sources)
        if self.steps_per_epoch is not None:
            counts = step_counts(self.mixing, self.steps_per_epoch, g, k)
        else:
            n = (sizes or [s.num_rows for s in self._snapshots()])[self.epoch_source] - int(self._start[self.epoch_source])
            counts = epoch_counts(self.mixing, g, k, epoch_source=self.epoch_source, rows=max(n, 0), drop_last=self.drop_last)
        return plan_epoch(counts, self.world_size, self.rank, self._start)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        if self.versions is None:
            self._pin_versions()
        return self._plan().steps

    # -- batches ---------------------------------------------------------------------------

    def _draw(self, plan: Plan, n: int, source: int, step: int) -> Draw:
        return draw(cell_plans(plan, [step])[0][source], n=n, seed=self.seed, epoch=self.epoch, source=source, step=step, global_step=self.global_base + step)

    def _catch_up(self, plan: Plan, n: int, source: int, step: int) -> None:
        """Feed a step-sequential sampler the steps other workers read, so all workers agree."""
        sampler = self.sources[source].sampler
        for earlier in range(max(sampler.next_step - self.global_base, 0), step):
            if plan.counts[earlier, source]:
                sampler.positions(self._draw(plan, n, source, earlier))

    @property
    def read_ahead(self) -> int:
        """Steps whose rows the first chunk reads together (one read and one conversion per source per
        chunk; later chunks are sized by `chunk_steps`). 1 when a sampler must see each step's
        feedback (priorities) or every step in order (curriculum) before drawing the next."""
        return READ_AHEAD if all(s.sampler.draws_ahead for s in self.sources) else 1

    def _chunks(self, plan: Plan, snaps: list[Snapshot], steps: np.ndarray) -> Iterator[Built]:
        """This rank's batches for `steps`, a chunk at a time. After the first chunk each one holds about
        `CHUNK_BYTES` of batches (at most `MAX_READ_AHEAD` steps): small rows get long chunks, so the
        per-chunk work is paid rarely, and wide rows (tokens, activations) short ones, so memory stays bounded."""
        at, size = 0, self.read_ahead
        adaptive = size > 1
        while at < len(steps):
            chunk = steps[at : at + size].tolist()
            drawn = self._drawn(plan, snaps, chunk)
            built = batches(chunk, drawn, self._read(snaps, drawn), self.pin_memory)
            if self.transform is not None:
                built = [(step, None if batch is None else self.transform(batch)) for step, batch in built]
            at += size
            yield built
            if adaptive:
                size = chunk_steps(built)

    def _drawn(self, plan: Plan, snaps: list[Snapshot], steps: list[int]) -> list[list[Cell]]:
        """Each step's (positions, weights) per source; step-sequential samplers are fed the steps other
        workers read first, and their state before each step is kept for checkpoints."""
        drawn: list[list[Cell]] = [[] for _ in steps]
        chunk = cell_plans(plan, steps)
        runs = [
            forward_runs([cells[i] for cells in chunk], snap.num_rows) if type(s.sampler) is Sequential else None
            for i, (s, snap) in enumerate(zip(self.sources, snaps))
        ]
        with contextlib.nullcontext() if self._pure else self._lock:
            for k, step in enumerate(steps):
                for i, (source, snap) in enumerate(zip(self.sources, snaps)):
                    if runs[i] is not None:
                        drawn[k].append((runs[i][k], None))  # type: ignore[index]
                        continue
                    if source.sampler.step_sequential:
                        self._catch_up(plan, snap.num_rows, i, step)
                        self._pre_state.setdefault(step, {})[i] = source.sampler.state_dict()
                    if chunk[k][i][3] == 0:  # no rows of this source for this rank
                        drawn[k].append((np.empty(0, np.int64), None))
                        continue
                    cell = draw(chunk[k][i], n=snap.num_rows, seed=self.seed, epoch=self.epoch, source=i, step=step, global_step=self.global_base + step)
                    drawn[k].append(source.sampler.positions(cell))
        return drawn

    @staticmethod
    def _read(snaps: list[Snapshot], drawn: list[list[Cell]]) -> list[list[dict[str, Any]]]:
        """Each source's rows for the drawn steps, in one read per source."""
        out = []
        for i, snap in enumerate(snaps):
            wanted = np.concatenate([d[i][0] for d in drawn])
            out.append(snap.read_arrays(wanted) if len(wanted) else [])
        return out

    def _produce(self, plan: Plan, snaps: list[Snapshot], steps: np.ndarray) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Batches in step order (see `_produce_chunks`)."""
        for built in self._produce_chunks(plan, snaps, steps):
            yield from built

    def _produce_chunks(self, plan: Plan, snaps: list[Snapshot], steps: np.ndarray) -> Iterator[Built]:
        """Chunks of batches in step order; with `prefetch` > 0 a thread reads ahead into a bounded queue.

        The queue holds whole chunks (`_chunks`; `prefetch / read_ahead` of them, at least one):
        handing batches over one by one made the consumer wake and take the GIL from the Python-busy
        reader once per batch, which cost a 3-source mixture ~10% of its throughput."""
        chunks = self._chunks(plan, snaps, steps)
        if self.prefetch == 0:
            yield from chunks
            return
        first = next(chunks, None)
        if first is None:
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
                for built in chunks:
                    if not put(built):
                        return
                put(_END)
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        thread = threading.Thread(target=work, name="replaystore-prefetch", daemon=True)
        thread.start()
        try:
            yield first
            while (item := out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is None:
            return self.iter_worker(0, 1)
        if self._shared is not None:  # a worker of `stream.loader`: this epoch's position, then tagged blocks
            self._shared.load_into(self)
            return self._tagged(info.id, info.num_workers)
        return self.iter_worker(info.id, info.num_workers, in_main=False)

    def _tagged(self, worker: int, num_workers: int) -> Iterator[Shipped | Packed]:
        """This worker's blocks of steps, a chunk at a time, packed for `StreamLoader` to unpack and
        put in order: a chunk crosses the process boundary as one shared buffer, which the worker
        reuses once the main process lets go of it (`shipping.py`). No prefetch thread here: the
        DataLoader already keeps each worker's next chunks coming, and the thread's start and
        handoffs cost a worker about a tenth of its CPU time."""
        assert self._shared is not None
        if self._slots is None or self._slots.worker != worker:
            self._slots = Slots(self._shared, worker)
        snaps, plan = self._epoch_plan()
        steps = worker_steps(plan.steps, num_workers, worker, start=self.step, block=self._shared.block)
        for snap in snaps:  # a scan covers this worker's block, not the rest of the file
            if isinstance(snap, LanceSnapshot):
                snap.window = self._shared.block * self.batch_size * self.world_size
        for built in self._chunks(plan, snaps, steps):
            yield pack(built, self._slots)

    def _epoch_plan(self) -> tuple[list[Snapshot], Plan]:
        """This epoch's snapshots and plan. A source the epoch wraps around is decoded once, and not again
        in later epochs while its version stays the same (the rows it holds are held during every epoch
        anyway); the rows kept for a source that no longer wraps are let go."""
        snaps = self._snapshots()
        plan = self._plan([s.num_rows for s in snaps])
        for i, snap in enumerate(snaps):
            if isinstance(snap, LanceSnapshot) and plan.counts[:, i].sum() > snap.num_rows:
                snap.retain(self._kept[i])
            else:
                self._kept[i].clear()
        return snaps, plan

    def iter_worker(self, worker: int, num_workers: int, in_main: bool = True) -> Iterator[Batch]:
        """The batches DataLoader worker `worker` of `num_workers` yields (every step ≡ worker mod n)."""
        if not 0 <= worker < num_workers:
            raise ValidationError("worker", f"must be in [0, {num_workers}), got {worker}")
        if self.versions is None:
            if not in_main:
                raise ValidationError("set_epoch", "call stream.set_epoch(epoch) in the main process before iterating with workers")
            self._pin_versions()
        snaps, plan = self._epoch_plan()
        steps = worker_steps(plan.steps, num_workers, worker, start=self.step)
        self._active, self._current = in_main, plan if in_main else None
        try:
            for step, batch in self._produce(plan, snaps, steps):
                self._consumed_step(step)
                if batch is not None:
                    yield Batch(batch)
        finally:
            self._active = False
        if in_main and self.step >= plan.steps:
            self._end_epoch(plan.steps)

    def _consumed_step(self, step: int) -> None:
        """`step` has been handed to the training loop: checkpoints and samplers move past it."""
        self.step = step + 1
        if self._pure:  # nothing drawn ahead depends on what was consumed, and no state to fold in
            return
        with self._lock:
            self._pre_state = {k: v for k, v in self._pre_state.items() if k >= self.step}
            for source in self.sources:
                source.sampler.consumed(self.global_base + step)

    def _end_epoch(self, steps: int) -> None:
        """The epoch is complete: release the pins of versions since superseded; the next epoch
        resolves again and takes over those still on its versions."""
        self._pins.keep_latest(self.sources)
        self.global_base += steps
        self.epoch, self.step, self.versions, self._pre_state = self.epoch + 1, 0, None, {}
        self._start, self._current = np.zeros_like(self._start), None

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
        positions = batch["_position"].numpy()
        with self._lock:
            if len(self.sources) == 1:  # every row is the one source's: no masks (a prioritized step's own cost)
                self.sources[0].sampler.update_priority(positions, loss, at)
                return
            for i, source in enumerate(self.sources):
                mask = index == i
                if mask.any():
                    source.sampler.update_priority(positions[mask], loss[mask], at)

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        """Where the stream stands. `step`: batches this rank consumed this epoch, when a DataLoader
        with workers iterated it (the main process cannot see their progress)."""
        step = self.step if step is None else integer("step", step, 0)
        return {
            "epoch": self.epoch,
            "step": step,
            "global_base": self.global_base,
            "versions": self.versions,
            "seed": self.seed,
            "global_batch": self.batch_size * self.world_size,
            "sources": [s.name for s in self.sources],
            "samplers": self._sampler_states(),
            "start": self._start.tolist(),
            "rows": self._consumed(step),
        }

    def _consumed(self, step: int) -> list[int]:
        """Global rows of each source the epoch used before `step`: where a resume at another global
        batch size continues."""
        if self.versions is None:
            return self._start.tolist()
        plan = self._current if self._current is not None else self._plan()
        used = plan.cursors[step] if step < plan.steps else self._start + plan.counts.sum(axis=0)
        return [int(x) for x in used]

    def _sampler_states(self) -> list[dict[str, Any]]:
        """Sampler states as of the next batch to consume, not as far as prefetch has drawn."""
        with self._lock:
            ahead = self._pre_state.get(self.step, {})
            return [ahead.get(i) or s.sampler.state_dict() for i, s in enumerate(self.sources)]

    def _elastic(self) -> bool:
        """Whether a checkpoint taken at another global batch size can continue here: one source, sampled
        without replacement, its epoch defined by its rows, so what is left of the epoch is a row count."""
        sampler = self.sources[0].sampler
        return len(self.sources) == 1 and self.steps_per_epoch is None and sampler.without_replacement and not sampler.step_sequential

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` stopped: the same global batches follow at any world size and
        number of workers. At another global batch size (batch_size × world_size) only a single source
        sampled without replacement can continue: the rest of its epoch, cut into the new batches."""
        g = self.batch_size * self.world_size
        for key, mine in (("seed", self.seed), ("sources", [s.name for s in self.sources])):
            if state.get(key) != mine:
                raise ValidationError(key, f"checkpoint has {state.get(key)!r}, this stream {mine!r}: cannot resume")
        elastic = state.get("global_batch") != g
        if elastic and not (self._elastic() and "rows" in state):
            raise ValidationError(
                "global_batch",
                f"checkpoint has {state.get('global_batch')!r}, this stream {g}: only a single source sampled without "
                f"replacement (no steps_per_epoch) resumes at another global batch size; keep batch_size × world_size = {state.get('global_batch')!r}",
            )
        self._generation += 1
        self.epoch, self.global_base = int(state["epoch"]), int(state["global_base"])
        self.step = 0 if elastic else int(state["step"])
        self._start = np.asarray(state["rows"] if elastic else state.get("start", self._start * 0), dtype=np.int64)
        self._current = None
        self.versions = state["versions"]
        if self.versions is None:
            self._pins.release()
        else:
            self._pins.hold(self.sources, self.versions)
        for source, sampler_state in zip(self.sources, state["samplers"]):
            source.sampler.load_state_dict(sampler_state)
        loaded = any(len(st.get("base", ())) for st in state["samplers"])
        self._sampler_epoch = self.epoch if loaded else -1  # a loaded priority state must not be reset

    def loader(self, num_workers: int = 0, **settings: Any) -> DataLoader:
        """A DataLoader over the stream: batches pass through whole, in the single-process order.

        With workers (spawn: Lance is not fork-safe) it is a `StreamLoader`: workers stay up across
        epochs (`persistent_workers=True` by default: a spawn start costs seconds), each reads whole
        blocks of consecutive steps (its own share of a sequential source), the loader puts the
        batches back in step order, and the stream follows what the loop consumed, so `state_dict()`
        and the next epoch need no help from the caller."""
        if not num_workers:
            return DataLoader(self, batch_size=None, num_workers=0, **settings)
        from replaystore.stream.loader import StreamLoader

        return StreamLoader(self, num_workers=num_workers, **settings)
