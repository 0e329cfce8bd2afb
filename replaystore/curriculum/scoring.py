"""Difficulty scores: compute a metric over a source table in Arrow batches and store it.

A scorer is any callable from a `pyarrow.RecordBatch` to one finite number per row (higher is
harder). Built in: `SequenceLength` (tokens or text) and `ModelLoss` (any torch model and
per-sample loss). `score` streams the source table through a scorer, computes exact percentiles
(fraction of samples with value ≤ this one) and replaces that (source, metric) in
`curriculum_scores` in one commit, so a re-score never leaves a mix of old and new values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replaystore.errors import ValidationError
from replaystore.schemas import Kind
from replaystore.store import Store, Version, validate_name

if TYPE_CHECKING:
    import torch

SCORES = Kind.CURRICULUM_SCORES.value
Scorer = Callable[[pa.RecordBatch], Any]
_METRIC = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def validate_metric(metric: str) -> str:
    """Metric names end up in SQL filters and file names: keep them plain."""
    if not isinstance(metric, str) or not _METRIC.fullmatch(metric):
        raise ValidationError("metric", f"{metric!r} is not a metric name: use 1-64 letters, digits, '_', '.', '-', starting with a letter")
    return metric


def percentiles(values: Any) -> np.ndarray:
    """Exact percentile of each value: the fraction of all values ≤ it (ties share the largest).

    The hardest sample is at 1.0 and equal values get equal percentiles, so a pacing threshold
    admits or refuses a whole tie group at once.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValidationError("values", f"must be one-dimensional, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValidationError("values", "must be finite (no NaN or inf)")
    order = np.argsort(v)
    ordered = v[order]
    # Each tie group's rank is the position just past its last member; one sequential pass, no search.
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True]) + 1
    out = np.empty(len(v), dtype=np.float64)
    out[order] = np.repeat(ends, np.diff(np.r_[0, ends])) / max(len(v), 1)
    return out


def ids_as_strings(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Sample ids of any Arrow type as a numpy array of str (the id type of the curriculum tables)."""
    return np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False), dtype=object)


# -- built-in scorers -----------------------------------------------------------------------


@dataclass
class SequenceLength:
    """Length of a list column (tokens) or a string column (characters) per row."""

    column: str = "tokens"

    @property
    def columns(self) -> list[str]:
        return [self.column]

    @property
    def description(self) -> str:
        return f"sequence length of '{self.column}'"

    def __call__(self, batch: pa.RecordBatch) -> np.ndarray:
        col = batch.column(self.column)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            lengths = pc.utf8_length(col)
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            lengths = pc.binary_length(col)
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            lengths = pc.list_value_length(col)
        else:
            raise ValidationError(self.column, f"sequence length needs a list, string or binary column, got {col.type}")
        return lengths.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)


def _matrix(column: pa.Array, name: str) -> np.ndarray:
    """A list/fixed-size-list column of equal-length rows as a 2-D numpy array, without per-row Python."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)):
        return column.to_numpy(zero_copy_only=False)
    if column.null_count:
        raise ValidationError(name, "has null rows; a model cannot score them")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and np.any(lengths != lengths[0]):
        raise ValidationError(name, "rows have different lengths; pass collate= to pad them into tensors")
    width = int(lengths[0]) if len(lengths) else 0
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)


@dataclass
class ModelLoss:
    """Per-sample loss of a torch model: `loss_fn(model(inputs), targets)`, one value per row.

    `loss_fn` must not reduce over the batch (e.g. `CrossEntropyLoss(reduction="none")`); extra
    dimensions (tokens) are averaged. By default inputs come from a vector column reshaped to
    `shape` and targets from a scalar column; `collate(batch) -> (inputs, targets)` handles
    anything else (padding token lists, several columns).
    """

    model: torch.nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor]
    inputs: str = "features"
    targets: str | None = "class_id"
    shape: Sequence[int] | None = None
    collate: Callable[[pa.RecordBatch], tuple[Any, Any]] | None = None
    device: str = "cpu"
    name: str | None = None
    columns: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.columns is None and self.collate is None:
            self.columns = [self.inputs] + ([self.targets] if self.targets else [])

    @property
    def description(self) -> str:
        return self.name or f"loss of {type(self.model).__name__} by {getattr(self.loss_fn, '__name__', type(self.loss_fn).__name__)}"

    def _tensors(self, batch: pa.RecordBatch) -> tuple[Any, Any]:
        import torch

        if self.collate is not None:
            return self.collate(batch)
        # Arrow buffers are read-only; one copy per batch keeps torch from aliasing them.
        x = torch.from_numpy(np.array(_matrix(batch.column(self.inputs), self.inputs)))
        if self.shape is not None:
            x = x.reshape(len(batch), *self.shape)
        x = x.float() if x.is_floating_point() else x  # float64 columns meet float32 weights
        y = torch.from_numpy(np.array(batch.column(self.targets).to_numpy(zero_copy_only=False))) if self.targets else None
        return x, y

    def __call__(self, batch: pa.RecordBatch) -> np.ndarray:
        import torch

        x, y = self._tensors(batch)
        was_training = self.model.training
        self.model.eval()  # dropout and batch-norm updates would make the score depend on the batch
        try:
            with torch.no_grad():
                loss = self.loss_fn(self.model(x.to(self.device)), y.to(self.device) if y is not None else None)
        finally:
            self.model.train(was_training)
        if not isinstance(loss, torch.Tensor) or loss.ndim == 0 or loss.shape[0] != len(batch):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValidationError("loss_fn", f"must return one loss per sample (use reduction='none'), got {shape} for {len(batch)} rows")
        return loss.reshape(len(batch), -1).mean(dim=1).double().cpu().numpy()


# -- scoring a table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """A metric over a source: ids, values and exact percentiles, aligned."""

    source: str
    metric: str
    sample_ids: np.ndarray
    values: np.ndarray
    percentiles: np.ndarray


def compute_scores(
    store: Store,
    source: str,
    metric: str,
    scorer: Scorer,
    *,
    id_column: str = "sample_id",
    columns: Sequence[str] | None = None,
    filter: str | None = None,
    batch_size: int = 4096,
    version: Version | None = None,
) -> Scores:
    """Run `scorer` over `source` in Arrow batches; nothing is written."""
    validate_metric(metric)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError("batch_size", f"must be a positive integer, got {batch_size!r}")
    ds = store.dataset(source, version)
    schema = ds.schema
    if schema.get_field_index(id_column) < 0:
        raise ValidationError("id_column", f"source '{source}' has no column '{id_column}' (has: {', '.join(schema.names)})")
    wanted = columns if columns is not None else getattr(scorer, "columns", None)
    projection = list(dict.fromkeys([id_column, *wanted])) if wanted is not None else None
    for name in projection or []:
        if ds.schema.get_field_index(name) < 0:
            raise ValidationError(name, f"the scorer reads it but source '{source}' has no such column (has: {', '.join(ds.schema.names)})")
    ids: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for batch in ds.to_batches(columns=projection, filter=filter, batch_size=batch_size):
        if batch.num_rows == 0:
            continue
        out = np.asarray(scorer(batch), dtype=np.float64).reshape(-1)
        if len(out) != batch.num_rows:
            raise ValidationError("scorer", f"returned {len(out)} values for a batch of {batch.num_rows} rows")
        if not np.all(np.isfinite(out)):
            raise ValidationError("value", f"scorer returned a non-finite value ({out[~np.isfinite(out)][0]})")
        ids.append(ids_as_strings(batch.column(id_column)))
        values.append(out)
    if not ids:
        raise ValidationError("source", f"'{source}' has no rows to score" + (f" matching {filter!r}" if filter else ""))
    sample_ids = np.concatenate(ids)
    if len(np.unique(sample_ids)) != len(sample_ids):
        raise ValidationError(id_column, f"sample ids of '{source}' must be unique to be scored")
    all_values = np.concatenate(values)
    return Scores(validate_name(source), metric, sample_ids, all_values, percentiles(all_values))


def write_scores(store: Store, scores: Scores, scorer: str | None = None, table: str = SCORES) -> int:
    """Replace the (source, metric) rows of the scores table with `scores` in one commit."""
    rows = {
        "source": pa.array(np.full(len(scores.sample_ids), scores.source, dtype=object), pa.string()),
        "sample_id": pa.array(scores.sample_ids, pa.string()),
        "metric": pa.array(np.full(len(scores.sample_ids), scores.metric, dtype=object), pa.string()),
        "value": pa.array(scores.values),
        "percentile": pa.array(scores.percentiles),
        "scorer": pa.array(np.full(len(scores.sample_ids), scorer, dtype=object), pa.string()),
    }
    scope = f"source = '{scores.source}' AND metric = '{scores.metric}'"
    return store.table(table, create=Kind.CURRICULUM_SCORES).merge(rows, on=["source", "metric", "sample_id"], delete_unmatched=scope)


def score(
    store: Store,
    source: str,
    metric: str,
    scorer: Scorer,
    *,
    id_column: str = "sample_id",
    columns: Sequence[str] | None = None,
    filter: str | None = None,
    batch_size: int = 4096,
    version: Version | None = None,
    description: str | None = None,
    table: str = SCORES,
) -> int:
    """Score every row of `source` under `metric` and store values and percentiles; returns the new version.

    `scorer` is a built-in (`SequenceLength`, `ModelLoss`) or any function of an Arrow batch;
    `columns` limits what is read (default: the scorer's `columns` attribute, else all). With a
    `filter` the metric holds just those rows (percentiles among them), so score subsets such as
    tasks under their own metric names (`loss.task3`).
    """
    scores = compute_scores(store, source, metric, scorer, id_column=id_column, columns=columns, filter=filter, batch_size=batch_size, version=version)
    text = description or getattr(scorer, "description", None) or getattr(scorer, "__qualname__", type(scorer).__name__)
    return write_scores(store, scores, text, table)


def load_scores(store: Store, source: str, metric: str, table: str = SCORES, version: Version | None = None) -> Scores:
    """The stored scores of one (source, metric); an unknown metric names the ones that exist."""
    validate_name(source)
    validate_metric(metric)
    stored = store.find(table, version)
    if stored is None:
        raise ValidationError("metric", f"unknown metric '{metric}' for source '{source}' (scored: none)")
    data = stored.read(columns=["sample_id", "value", "percentile"], filter=f"source = '{source}' AND metric = '{metric}'")
    if data.num_rows == 0:
        known = stored.read(columns=["metric"], filter=f"source = '{source}'").column("metric")
        names = sorted(set(known.to_pylist()))
        raise ValidationError("metric", f"unknown metric '{metric}' for source '{source}' (scored: {', '.join(names) or 'none'})")
    return Scores(
        source,
        metric,
        ids_as_strings(data.column("sample_id")),
        data.column("value").to_numpy(),
        data.column("percentile").to_numpy(),
    )
