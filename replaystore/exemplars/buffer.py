"""An exemplar buffer: a class-incremental memory whose bytes, plus its model's, stay inside one budget.

Rows live in a table named like the buffer (kind `exemplars`), so a buffer is versioned, tagged
and restored on its own. Its settings (budget, model bytes, policy, classes seen) sit in that
table's schema metadata, so every version carries the settings its rows were kept under; the
`exemplar_buffers` table lists the buffers. Every change plans on one version and commits the new
rows, the cuts and the settings as ONE Lance version that lands only if no other writer committed
in between (`Store.atomically`; otherwise it plans again): no committed version is ever over
budget, whichever processes or machines write the buffer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from replaystore import schemas
from replaystore.checks import integer
from replaystore.errors import BudgetExceededError, ValidationError
from replaystore.exemplars import settings as cfg
from replaystore.exemplars.budget import exemplars_in
from replaystore.exemplars.plan import plan_keep
from replaystore.exemplars.policies import make_policy
from replaystore.exemplars.samples import TOKENS, Encoded, as_numpy, decode_raw, decode_tokens, decode_vectors, encode_raw, encode_tokens
from replaystore.exemplars.selectors import Candidates, Selector, make_selector
from replaystore.schemas import Kind
from replaystore.store import validate_name
from replaystore.table import Edit, Table, Version

if TYPE_CHECKING:
    from replaystore.store import Store

KEY = ["class_id", "sample_id"]
_PLAN_COLUMNS = ["class_id", "sample_id", "rank", "nbytes"]
# Which stored settings each keyword of open()/configure() decides.
_DECIDES = {
    "budget": ("budget_bytes",),
    "model": ("model_bytes", "model_params", "model_dtype"),
    "model_params": ("model_bytes", "model_params", "model_dtype"),
    "model_dtype": ("model_bytes", "model_dtype"),
    "count_buffers": ("model_bytes", "count_buffers"),
}
_MODEL_KEYS = ("model", "model_params", "model_dtype", "count_buffers")
SETTINGS_KEY = "replaystore.buffer"  # schema metadata: the settings each version's rows were kept under


@dataclass(frozen=True)
class Change:
    """What one write did: the new version, rows added, rows cut per class, and the bytes both ways."""

    version: int
    added: int = 0
    bytes_added: int = 0
    cut: dict[int, int] = field(default_factory=dict)
    bytes_freed: int = 0

    @property
    def rows_cut(self) -> int:
        return sum(self.cut.values())


@dataclass(frozen=True)
class ExemplarSet:
    """A buffer's samples as arrays, ordered by class then rank."""

    labels: np.ndarray
    sample_ids: np.ndarray
    task_ids: np.ndarray
    ranks: np.ndarray
    data: np.ndarray | None = None  # (N, *shape) raw samples
    tokens: list[np.ndarray] | None = None  # token buffers
    features: np.ndarray | None = None  # (N, D) when every row has them

    def __len__(self) -> int:
        return len(self.labels)

    def torch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(data, labels)` tensors sharing memory with the arrays, ready for a TensorDataset."""
        if self.data is None:
            raise ValidationError("data", "this buffer holds token samples; use .tokens")
        return torch.from_numpy(self.data), torch.from_numpy(self.labels)


class ExemplarBuffer:
    """A byte-budgeted exemplar memory; open it with `store.exemplars(name, budget=..., ...)`."""

    def __init__(self, store: Store, settings: cfg.BufferSettings) -> None:
        self.store = store
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.buffer

    def __repr__(self) -> str:
        return f"ExemplarBuffer({self.name!r}, budget={self.settings.budget_bytes}, policy={self.settings.policy!r}, selector={self.settings.selector!r})"

    # -- opening and settings ----------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, name: str, **settings: Any) -> ExemplarBuffer:
        """Open buffer `name`, creating it when settings are given.

        Settings: `budget` (bytes, model included), `model` (a torch.nn.Module) or `model_params`
        with `model_dtype`, `count_buffers`, `policy` ('fixed_total' | 'fixed_per_class' with
        `memory_per_class`), `selector` ('herding' | 'closest_to_centre' | 'k_center' | 'random' | 'reservoir'),
        `seed`, `on_over_budget` ('evict' | 'refuse'), optionally `sample_shape`/`sample_dtype`.
        Reopening with settings that differ from the stored ones is refused; use `configure`.
        """
        validate_name(name)
        cfg.check_names(settings)
        asked = cfg.build(name, **settings) if settings else None
        existing = store.find(name)
        stored = _stored(store, name, existing.dataset) if existing is not None else None
        if stored is not None:  # opening an existing buffer only reads
            if asked is not None:
                _refuse_differences(stored, asked, settings)
            return cls(store, stored)
        if asked is None:
            raise cfg.missing(name, store.uri)
        table = store.table(name, create=Kind.EXEMPLARS)

        def plan(ds: lance.LanceDataset) -> tuple[Edit | None, cfg.BufferSettings]:
            raced = _stored(store, name, ds)  # another process created it meanwhile
            if raced is not None:
                _refuse_differences(raced, asked, settings)
                return None, raced
            return _with(asked), asked

        _, chosen = table.atomically(plan)
        _save(store, chosen)
        return cls(store, chosen)

    @staticmethod
    def names(store: Store) -> list[str]:
        """Every exemplar buffer in the store, sorted."""
        catalog = store.find(cfg.SETTINGS_TABLE)
        return [] if catalog is None else sorted(catalog.read(columns=["buffer"])["buffer"].to_pylist())

    def refresh(self) -> cfg.BufferSettings:
        """Re-read the settings (another process may have configured the buffer)."""
        stored = _stored(self.store, self.name, self.store.dataset(self.name))
        if stored is None:
            raise cfg.missing(self.name, self.store.uri)
        self.settings = stored
        return stored

    def configure(self, **changes: Any) -> Change:
        """Change settings (a grown model, a new budget or policy) and cut the buffer to fit, atomically.

        With `on_over_budget='refuse'` a change that would evict rows is refused and nothing changes.
        """
        cfg.check_names(changes)

        def plan(ds: lance.LanceDataset) -> tuple[Edit | None, tuple[cfg.BufferSettings, Change]]:
            old = self._settings(ds)
            base: dict[str, Any] = {
                "budget": old.budget_bytes,
                "policy": old.policy,
                "memory_per_class": old.memory_per_class,
                "selector": old.selector,
                "seed": old.seed,
                "on_over_budget": old.on_over_budget,
                "sample_shape": old.sample_shape,
                "sample_dtype": old.sample_dtype,
            }
            if changes.get("policy") == "fixed_total" and "memory_per_class" not in changes:
                base["memory_per_class"] = None
            new = cfg.build(self.name, **{**base, **changes})
            if not any(k in changes for k in _MODEL_KEYS):
                new = replace(new, model_bytes=old.model_bytes, model_params=old.model_params, model_dtype=old.model_dtype, count_buffers=old.count_buffers)
                cfg.check_fits(new)
            new = replace(new, classes=old.classes)
            edit, change = self._cut_to_fit(ds, new, refuse=new.on_over_budget == "refuse")
            return replace(edit or Edit(), metadata=_with(new).metadata), (new, change)

        version, (new, change) = self.store.atomically(self.name, plan)
        _save(self.store, new)
        self.settings = new
        return replace(change, version=version)

    # -- writes --------------------------------------------------------------------------------

    def add(
        self,
        class_id: int,
        samples: Any = None,
        features: Any = None,
        *,
        tokens: Sequence[Sequence[int]] | np.ndarray | None = None,
        task_id: int = 0,
        sample_ids: Sequence[int] | np.ndarray | None = None,
    ) -> Change:
        """Offer candidates of one class; the selector ranks them (with the class's kept rows) and the buffer keeps what fits.

        `samples` is an `(N, *shape)` array or tensor (or pass `tokens`), `features` an `(N, D)`
        array for herding / closest-to-centre. Under `fixed_total` a new class shrinks every old
        class to its best-ranked rows, in the same commit.
        """
        class_id = integer("class_id", class_id)
        task_id = integer("task_id", task_id, minimum=0)
        encoded = _encode(samples, tokens)
        n = len(encoded.nbytes)
        feats = None if features is None else _features(features, n)
        ids = None if sample_ids is None else _ids(sample_ids, n)

        def plan(ds: lance.LanceDataset) -> tuple[Edit | None, tuple[cfg.BufferSettings, Change]]:
            stored = self._settings(ds)
            s = _learn_shape(stored, encoded)
            selector = make_selector(s.selector, s.seed)
            if selector.needs_features and feats is None:
                raise ValidationError("features", f"selector '{s.selector}' ranks by features: pass an (N, D) array")
            current = ds.to_table(columns=_PLAN_COLUMNS)
            chosen_ids = ids
            if chosen_ids is None:
                start = int(pc.max(current["sample_id"]).as_py()) + 1 if current.num_rows else 0
                chosen_ids = np.arange(start, start + n, dtype=np.int64)
            new_rows = schemas.conform(
                {
                    **encoded.columns,
                    "buffer": pa.repeat(pa.scalar(self.name), n),
                    "sample_id": chosen_ids,
                    "class_id": np.full(n, class_id, dtype=np.int64),
                    "task_id": np.full(n, task_id, dtype=np.int64),
                    **({} if feats is None else {"features": feats}),
                    "rank": np.arange(1, n + 1, dtype=np.int32),
                    "nbytes": encoded.nbytes,
                },
                ds.schema,
            )
            classes = tuple(sorted({*s.classes, *np.unique(current["class_id"].to_numpy()).tolist(), class_id}))
            s = replace(s, classes=classes)
            edit, change = self._offer(ds, s, current, class_id, new_rows, selector)
            if s != stored:
                edit = replace(edit or Edit(), metadata=_with(s).metadata)
            return edit, (s, change)

        version, (s, change) = self.store.atomically(self.name, plan)
        if s != self.settings:
            _save(self.store, s)
            self.settings = s
        return replace(change, version=version)

    def rebalance(self) -> Change:
        """Cut the buffer back inside its policy and budget (rows written around the buffer, e.g. a plain `store.append`).

        Always evicts the lowest-ranked rows, whatever `on_over_budget` says: that is its job.
        """
        version, change = self.store.atomically(self.name, lambda ds: self._cut_to_fit(ds, self._settings(ds), refuse=False))
        return replace(change, version=version)

    # -- reads ---------------------------------------------------------------------------------

    def samples(self, version: Version | None = None, classes: Sequence[int] | None = None) -> ExemplarSet:
        """The kept samples (raw arrays decoded by shape and dtype, or tokens), by class then rank."""
        where = None if classes is None else f"class_id IN ({', '.join(str(integer('classes', c)) for c in classes)})"
        table = self.store.read(self.name, version=version, filter=where).sort_by([("class_id", "ascending"), ("rank", "ascending")])
        out: dict[str, Any] = {
            "labels": table["class_id"].to_numpy().copy(),
            "sample_ids": table["sample_id"].to_numpy().copy(),
            "task_ids": table["task_id"].to_numpy().copy(),
            "ranks": table["rank"].to_numpy().copy(),
        }
        if table.num_rows and table["features"].null_count == 0:
            out["features"] = decode_vectors(table["features"])
        if table.num_rows and table["tokens"].null_count == 0:
            out["tokens"] = decode_tokens(table["tokens"])
        elif table.num_rows:
            shape = table["shape"][0].as_py()
            out["data"] = decode_raw(table["data"], shape, table["dtype"][0].as_py())
        elif self.settings.sample_shape is not None and self.settings.sample_dtype not in (None, TOKENS):
            out["data"] = np.empty((0, *self.settings.sample_shape), dtype=self.settings.sample_dtype)
        return ExemplarSet(**out)

    def settings_at(self, version: Version) -> cfg.BufferSettings:
        """The settings the rows of `version` (number or tag) were kept under: a budget as it was then."""
        return self._settings(self.store.dataset(self.name, version))

    def budget(self) -> dict[str, Any]:
        """Budget report: total, model, exemplar and free bytes, the model's worth in exemplars, per-class counts, bytes on disk."""
        table = self.store.table(self.name)
        ds = table.dataset
        s = self.settings = self._settings(ds)
        rows = ds.to_table(columns=["class_id", "nbytes"])
        used = int(pc.sum(rows["nbytes"]).as_py() or 0)
        counts = rows.group_by("class_id").aggregate([("class_id", "count")]).sort_by("class_id")
        per = s.sample_bytes
        return {
            "buffer": self.name,
            "version": ds.version,
            "total_bytes": s.budget_bytes,
            "model_bytes": s.model_bytes,
            "model_params": s.model_params,
            "model_dtype": s.model_dtype,
            "model_buffers_counted": s.count_buffers,
            "exemplar_bytes": used,
            "free_bytes": None if s.budget_bytes is None else s.budget_bytes - s.model_bytes - used,
            "sample_bytes": per,
            "model_exemplar_equivalent": None if not per else exemplars_in(s.model_bytes, per),
            "rows": rows.num_rows,
            "per_class": dict(zip(counts["class_id"].to_pylist(), counts["class_id_count"].to_pylist())),
            "disk_bytes": table.info().bytes,
            "policy": s.policy if s.memory_per_class is None else f"{s.policy}({s.memory_per_class})",
            "selector": s.selector,
            "on_over_budget": s.on_over_budget,
        }

    # -- planning and committing -------------------------------------------------------------

    def _settings(self, ds: lance.LanceDataset) -> cfg.BufferSettings:
        stored = _stored(self.store, self.name, ds)
        if stored is None:
            raise cfg.missing(self.name, self.store.uri)
        return stored

    def _offer(
        self, ds: lance.LanceDataset, s: cfg.BufferSettings, current: pa.Table, class_id: int, new_rows: pa.Table, selector: Selector
    ) -> tuple[Edit | None, Change]:
        """Rank class `class_id`'s kept rows (as of `ds`) together with the new ones and plan one edit."""
        kept_before = ds.to_table(filter=f"class_id = {class_id}").sort_by("rank")
        fresh = pc.is_in(kept_before["sample_id"], value_set=new_rows["sample_id"])
        kept_before = kept_before.filter(pc.invert(fresh))  # an id offered again is replaced by the new offer
        if selector.needs_features and kept_before["features"].null_count:
            raise ValidationError("features", f"class {class_id} has kept rows without stored features; selector '{s.selector}' needs them")
        pool = pa.concat_tables([kept_before, new_rows.cast(kept_before.schema)])
        nbytes = pool["nbytes"].to_numpy()
        quota = make_policy(s.policy, s.memory_per_class).quota(s.exemplar_bytes, len(s.classes))
        k = _selection_size(len(pool), nbytes, quota.rows, [quota.nbytes, s.exemplar_bytes])
        feats = decode_vectors(pool["features"]) if selector.needs_features else None
        order = selector.order(Candidates(class_id, pool["sample_id"].to_numpy(), feats), k)

        others = current.filter(pc.not_equal(current["class_id"], class_id))
        plan = plan_keep(
            np.r_[others["class_id"].to_numpy(), np.full(len(order), class_id)],
            np.r_[others["rank"].to_numpy(), np.arange(1, len(order) + 1)],
            np.r_[others["nbytes"].to_numpy(), nbytes[order]],
            quota,
            s.exemplar_bytes,
        )
        self._refuse_if_over(s, int(pc.sum(current["nbytes"]).as_py() or 0), plan.requested_bytes, "this add")
        chosen = order[plan.keep[len(others) :]]
        source = pool.take(pa.array(chosen, type=pa.int64()))
        source = source.set_column(source.schema.get_field_index("rank"), "rank", pa.array(np.arange(1, len(chosen) + 1), pa.int32()))
        cut, freed, predicates = _cuts(others, plan.keep[: len(others)])
        old, new = chosen[chosen < len(kept_before)], chosen[chosen >= len(kept_before)]
        mine = current.filter(pc.equal(current["class_id"], class_id))
        if dropped := mine.num_rows - len(old):
            cut[class_id] = dropped
            freed += int(pc.sum(mine["nbytes"]).as_py() or 0) - int(nbytes[old].sum())
        if not len(new) and not cut and np.array_equal(chosen, np.arange(len(kept_before))):
            return None, Change(ds.version)  # nothing kept, nothing cut: no empty version
        # The class's rows are replaced by its new ranking, and the cut classes lose their tails.
        edit = Edit(delete=_any([f"class_id = {class_id}", *predicates]), insert=source)
        return edit, Change(ds.version, len(new), int(nbytes[new].sum()), cut, freed)

    def _cut_to_fit(self, ds: lance.LanceDataset, s: cfg.BufferSettings, refuse: bool) -> tuple[Edit | None, Change]:
        """Plan the cuts that bring the rows of `ds` inside the policy and budget of `s`."""
        current = ds.to_table(columns=_PLAN_COLUMNS)
        classes = len({*s.classes, *np.unique(current["class_id"].to_numpy()).tolist()})
        quota = make_policy(s.policy, s.memory_per_class).quota(s.exemplar_bytes, classes)
        plan = plan_keep(current["class_id"].to_numpy(), current["rank"].to_numpy(), current["nbytes"].to_numpy(), quota, s.exemplar_bytes)
        if refuse:  # the rows as they are must fit the new settings
            used = int(pc.sum(current["nbytes"]).as_py() or 0)
            self._refuse_if_over(s, used, used, "this change")
        cut, freed, predicates = _cuts(current, plan.keep)
        if not predicates:
            return None, Change(ds.version)
        return Edit(delete=_any(predicates)), Change(ds.version, cut=cut, bytes_freed=freed)

    def _refuse_if_over(self, s: cfg.BufferSettings, used: int, requested: int, what: str) -> None:
        """With on_over_budget='refuse', a write whose rows would not fit raises instead of evicting."""
        if s.on_over_budget == "refuse" and s.exemplar_bytes is not None and requested > s.exemplar_bytes:
            raise BudgetExceededError(
                f"buffer '{self.name}': budget {s.budget_bytes:,} B = model {s.model_bytes:,} B + {s.exemplar_bytes:,} B for exemplars; "
                f"it holds {used:,} B of exemplars and {what} needs {requested:,} B "
                f"({requested - s.exemplar_bytes:,} B over); on_over_budget='refuse', nothing was written"
            )


def _cuts(rows: pa.Table, keep: np.ndarray) -> tuple[dict[int, int], int, list[str]]:
    """Rows cut per class, the bytes they free, and one `class AND rank >` predicate per cut class."""
    if keep.all():
        return {}, 0, []
    cls, rank, nbytes = rows["class_id"].to_numpy(), rows["rank"].to_numpy(), rows["nbytes"].to_numpy()
    cut: dict[int, int] = {}
    predicates = []
    for c in np.unique(cls[~keep]).tolist():
        mine = cls == c
        kept_ranks = rank[mine & keep]
        last = int(kept_ranks.max()) if len(kept_ranks) else 0
        cut[c] = int(np.count_nonzero(mine & ~keep))
        predicates.append(f"(class_id = {c} AND rank > {last})")
    return cut, int(nbytes[~keep].sum()), predicates


def _any(predicates: list[str]) -> str:
    return " OR ".join(f"({p})" for p in predicates)


def _selection_size(n: int, nbytes: np.ndarray, rows: int | None, byte_limits: list[int | None]) -> int:
    """How many candidates are worth ranking: no more than could ever be kept (herding is O(k·N·D))."""
    k = n if rows is None else min(n, rows)
    smallest = int(nbytes.min()) if n else 0
    for limit in byte_limits:
        if limit is not None and smallest > 0:
            k = min(k, limit // smallest)
    return k


def _stored(store: Store, name: str, ds: lance.LanceDataset) -> cfg.BufferSettings | None:
    """The settings committed with version `ds` (buffers written before settings moved into their
    table: the `exemplar_buffers` row, until their next change commits them here)."""
    raw = (ds.schema.metadata or {}).get(SETTINGS_KEY.encode())
    return cfg.from_row(json.loads(raw)) if raw is not None else _catalog(store, name)


def _with(settings: cfg.BufferSettings) -> Edit:
    """An edit that commits `settings` with the buffer's rows."""
    return Edit(metadata={SETTINGS_KEY: json.dumps({k: v[0] for k, v in settings.row().items()}, sort_keys=True)})


def _catalog(store: Store, name: str) -> cfg.BufferSettings | None:
    catalog = store.find(cfg.SETTINGS_TABLE)
    return None if catalog is None else _listed(catalog, name)


def _listed(catalog: Table, name: str) -> cfg.BufferSettings | None:
    rows = catalog.read(filter=f"buffer = '{name}'").to_pylist()
    return cfg.from_row(rows[-1]) if rows else None


def _save(store: Store, settings: cfg.BufferSettings) -> None:
    """List the buffer (with its latest settings) in `exemplar_buffers`, for `names()` and reports."""
    catalog = store.table(cfg.SETTINGS_TABLE, create=Kind.EXEMPLAR_BUFFERS)
    if _listed(catalog, settings.buffer) != settings:
        catalog.merge(settings.row(), on="buffer")


def _refuse_differences(stored: cfg.BufferSettings, asked: cfg.BufferSettings, given: dict[str, Any]) -> None:
    decided = {f for key in given for f in _DECIDES.get(key, (key,))}
    for name in cfg.differences(stored, asked):
        if name in decided:
            raise ValidationError(
                name,
                f"buffer '{stored.buffer}' exists with {name}={getattr(stored, name)!r}, not {getattr(asked, name)!r}; "
                "open it without settings, or change them with buffer.configure(...)",
            )


def _learn_shape(s: cfg.BufferSettings, encoded: Encoded) -> cfg.BufferSettings:
    """The first add fixes the buffer's sample shape and dtype; later ones must match it."""
    if s.sample_dtype is None:
        return replace(s, sample_shape=encoded.shape, sample_dtype=encoded.dtype)
    if s.sample_dtype == TOKENS or encoded.dtype == TOKENS:
        if s.sample_dtype != encoded.dtype:
            raise ValidationError(
                "samples",
                f"buffer '{s.buffer}' holds {'token' if s.sample_dtype == TOKENS else 'raw'} samples; got {'tokens' if encoded.dtype == TOKENS else 'raw samples'}",
            )
        return s
    if s.sample_shape is None:
        return replace(s, sample_shape=encoded.shape)
    if (s.sample_shape, s.sample_dtype) != (encoded.shape, encoded.dtype):
        raise ValidationError(
            "samples",
            f"buffer '{s.buffer}' holds samples of shape {s.sample_shape} and dtype {s.sample_dtype}; got shape {encoded.shape} dtype {encoded.dtype}",
        )
    return s


def _encode(samples: Any, tokens: Any) -> Encoded:
    if (samples is None) == (tokens is None):
        raise ValidationError("samples", "pass either samples (an (N, *shape) array) or tokens (N token-id sequences)")
    return encode_raw(samples) if tokens is None else encode_tokens(tokens)


def _features(features: Any, n: int) -> np.ndarray:
    arr = as_numpy(features, "features").astype(np.float32, copy=False)
    if arr.ndim != 2 or len(arr) != n:
        raise ValidationError("features", f"must have shape (N, D) with N = {n} samples, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValidationError("features", "must be finite (no NaN or inf)")
    return arr


def _ids(sample_ids: Any, n: int) -> np.ndarray:
    arr = as_numpy(sample_ids, "sample_ids")
    if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in "iu":
        raise ValidationError("sample_ids", f"must be {n} integers (one per sample), got shape {arr.shape} dtype {arr.dtype}")
    if len(np.unique(arr)) != n:
        raise ValidationError("sample_ids", "must be unique within one add")
    return arr.astype(np.int64)
