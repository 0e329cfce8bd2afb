"""Record a frozen model's hidden states and statistics for the general samples.

Batches are right-padded by us (never by the tokenizer), so causal and bidirectional models see
positions 0..n−1 and padding tokens never reach the statistics or the stored states. Every batch
commits its states, then its statistics (with the ids it covered); a rerun after a crash asks the
store what is missing for this model fingerprint and forwards only those samples. Zone codes need
thresholds over *all* samples, so `precision="zones"` makes two passes: statistics, then codes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from replaystore.checks import integer
from replaystore.errors import NotFoundError, ValidationError
from replaystore.extras import require
from replaystore.gere import codec
from replaystore.gere.fingerprint import model_fingerprint
from replaystore.gere.samples import DEFAULT_MAX_LENGTH, SAMPLES_TABLE, STATES_TABLE, capped_length, token_limit, tokenize, tokenizer_name
from replaystore.gere.stats import STATS_KEYS, STATS_TABLE, RunningStats, check_k, load_stats
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.table import Table

STATE_KEYS = ["sample_id", "model_fingerprint", "layer", "precision"]

Batch = tuple[list[str], torch.Tensor, torch.Tensor, np.ndarray]


def load_model(path: str | Path, topk: int = 0) -> torch.nn.Module:
    """A transformers model from a local folder: the causal LM if it has one (logits for top-k)."""
    require("transformers", extra="gere", feature="GeRe distillation from a model folder")
    from transformers import AutoModel, AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(path))
    except ValueError:
        if topk:
            raise ValidationError("topk", f"the model at {path} has no language-model head to take top-k logits from") from None
        return AutoModel.from_pretrained(str(path))


def distill(
    store: Store,
    model: torch.nn.Module | str | Path,
    tokenizer: Any = None,
    *,
    precision: str = "float32",
    layers: Sequence[int] = (-1,),
    batch_size: int = 8,
    zone_k: float = 1.0,
    topk: int = 0,
    sample_ids: Sequence[str] | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    samples_table: str = SAMPLES_TABLE,
    states_table: str = STATES_TABLE,
    stats_table: str = STATS_TABLE,
) -> dict[str, Any]:
    """Store states (and float64 statistics) of `model` for the general samples; resumable.

    `model` is an in-memory transformers model or a local model folder; `tokenizer` (object or
    folder) is only needed for samples ingested without token ids; they are tokenized to
    `max_length` capped at the model's `max_position_embeddings` and the tokenizer's
    `model_max_length`. A stored sample longer than that is refused before anything is written
    (`retokenize` shortens them). Top-k logits (`topk` > 0) are stored with the rows of the first
    layer in `layers`. Returns a summary dict.
    """
    codec.check_precision(precision)
    zone_k = check_k(zone_k)
    integer("batch_size", batch_size, 1)
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 0:
        raise ValidationError("topk", f"must be an integer ≥ 0, got {topk!r}")
    if isinstance(model, (str, Path)):
        tokenizer = tokenizer if tokenizer is not None else str(model)
        model = load_model(model, topk)
    if isinstance(tokenizer, (str, Path)):
        require("transformers", extra="gere", feature="GeRe distillation with a tokenizer folder")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    layers = _check_layers(model, layers)
    if topk and getattr(model, "get_output_embeddings", lambda: None)() is None:
        raise ValidationError("topk", f"{type(model).__name__} has no language-model head to take top-k logits from")
    fingerprint = model_fingerprint(model)
    started = time.perf_counter()
    with store.lock(stats_table):
        samples = _tokenized_samples(store, samples_table, sample_ids, tokenizer, capped_length(max_length, tokenizer, model), model)
        run = _Run(store, model, fingerprint, layers, precision, zone_k, topk, batch_size, samples, states_table, stats_table)
        run.execute()
    seconds = time.perf_counter() - started
    return {
        "model_fingerprint": fingerprint,
        "precision": precision,
        "layers": list(layers),
        "samples": samples.num_rows,
        "states_written": run.written,
        "already_stored": run.already_stored,
        "forwarded_tokens": run.tokens,
        "seconds": seconds,
        "tokens_per_s": run.tokens / seconds if seconds > 0 else 0.0,
        "stats_count": {layer: stats.count for layer, stats in run.stats.items()},
    }


def _check_layers(model: torch.nn.Module, layers: Sequence[int]) -> list[int]:
    """Layer indices into `hidden_states` (embeddings + one per block); -1 is the last block."""
    config = getattr(model, "config", None)
    blocks = getattr(config, "num_hidden_layers", None)
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValidationError("layers", f"must be a non-empty list of distinct indices, got {layers!r}")
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or (blocks is not None and not -(blocks + 1) <= layer <= blocks):
            raise ValidationError("layers", f"{layer!r} is not a hidden-state index of a {blocks}-layer model")
    return layers


def _tokenized_samples(store: Store, table: str, sample_ids: Sequence[str] | None, tokenizer: Any, max_length: int, model: torch.nn.Module) -> pa.Table:
    """The samples to distill with token ids, tokenizing (and storing) any that lack them."""
    stored = store.find(table)
    if stored is None:
        raise NotFoundError(f"no general samples: table '{table}' does not exist (ingest first)")
    samples = stored.read()
    if sample_ids is not None:
        wanted = pa.array(list(sample_ids), type=pa.string())
        missing = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=samples.column("sample_id"))))
        if len(missing):
            raise ValidationError("sample_ids", f"{len(missing)} id(s) not in '{table}', e.g. {missing[0].as_py()!r}")
        samples = samples.filter(pc.is_in(samples.column("sample_id"), value_set=wanted))
    _check_fits(samples, token_limit(tokenizer, model), table)
    lacking = samples.filter(pc.is_null(samples.column("token_ids")))
    if lacking.num_rows:
        if tokenizer is None:
            raise ValidationError("tokenizer", f"{lacking.num_rows} sample(s) were ingested without token ids: pass a tokenizer")
        ids = tokenize(tokenizer, lacking.column("text").to_pylist(), max_length)
        filled = (
            lacking.set_column(lacking.schema.get_field_index("token_ids"), "token_ids", pa.array(ids, type=pa.list_(pa.int32())))
            .set_column(lacking.schema.get_field_index("token_count"), "token_count", pa.array([len(i) for i in ids], type=pa.int32()))
            .set_column(lacking.schema.get_field_index("tokenizer"), "tokenizer", pa.array([tokenizer_name(tokenizer)] * len(ids)))
        )
        stored.merge(filled, on="sample_id")
        samples = pa.concat_tables([samples.filter(pc.is_valid(samples.column("token_ids"))), filled])
    samples = samples.filter(pc.greater(samples.column("token_count"), 0))
    return samples.select(["sample_id", "token_ids", "token_count"]).combine_chunks()


def _check_fits(samples: pa.Table, limit: int | None, table: str) -> None:
    """Refuse samples stored with more tokens than the model takes (they would crash its forward)."""
    longest = pc.max(samples.column("token_count")).as_py()
    if limit is not None and longest is not None and longest > limit:
        over = samples.filter(pc.greater(samples.column("token_count"), limit))
        raise ValidationError(
            "token_ids",
            f"{over.num_rows} sample(s) in '{table}' have up to {longest} tokens but the model takes {limit} "
            f"(e.g. {over.column('sample_id')[0].as_py()!r}): run replaystore.gere.retokenize(store, tokenizer, max_length={limit}) first",
        )


class _Run:
    """One distillation: what is missing per layer, the forward passes, and the commits."""

    def __init__(
        self,
        store: Store,
        model: torch.nn.Module,
        fingerprint: str,
        layers: list[int],
        precision: str,
        zone_k: float,
        topk: int,
        batch_size: int,
        samples: pa.Table,
        states_table: str,
        stats_table: str,
    ) -> None:
        self.store, self.model, self.fingerprint, self.layers = store, model, fingerprint, layers
        self.precision, self.zone_k, self.topk, self.batch_size = precision, zone_k, topk, batch_size
        self.samples, self.states_table, self.stats_table = samples, states_table, stats_table
        self.ids = samples.column("sample_id").to_pylist()
        self.stats: dict[int, RunningStats] = {}
        self.written = self.tokens = self.already_stored = 0
        self._handles: dict[str, Table] = {}

    def _table(self, name: str, kind: str) -> Table:
        """Each table this run writes, opened (or created) once: its commits move the handle on."""
        if name not in self._handles:
            self._handles[name] = self.store.table(name, create=kind)
        return self._handles[name]

    def execute(self) -> None:
        for layer in self.layers:
            with contextlib.suppress(NotFoundError):
                self.stats[layer] = load_stats(self.store, self.fingerprint, layer, self.stats_table)
        need_stats = {layer: set(self.ids) - set(self._stats_ids(layer)) for layer in self.layers}
        if self.precision == "zones":
            self._forward(set().union(*need_stats.values()), lambda batch, out: self._add_stats(batch, out, need_stats))
        need_states = {layer: set(self.ids) - self._stored(layer) for layer in self.layers}
        self.already_stored = len(set(self.ids) - set().union(*need_states.values()))
        todo = set().union(*need_states.values())
        if self.precision != "zones":
            todo |= set().union(*need_stats.values())

        def step(batch: Batch, out: Any) -> None:
            self._write_states(batch, out, need_states)
            if self.precision != "zones":
                self._add_stats(batch, out, need_stats)

        self._forward(todo, step)

    def _stats_ids(self, layer: int) -> list[str]:
        return self.stats[layer].sample_ids if layer in self.stats else []

    def _stored(self, layer: int) -> set[str]:
        """Samples whose states for this model/layer/precision are stored and still valid."""
        states = self.store.find(self.states_table)
        if states is None:
            return set()
        where = f"model_fingerprint = '{self.fingerprint}' AND layer = {layer} AND precision = '{self.precision}'"
        rows = states.read(columns=["sample_id", "zone_k", "stats_count"], filter=where)
        if self.precision == "zones":
            current = self.stats[layer].count if layer in self.stats else -1
            valid = pc.and_(pc.equal(rows.column("zone_k"), self.zone_k), pc.equal(rows.column("stats_count"), current))
            rows = rows.filter(valid.fill_null(False))
        return set(rows.column("sample_id").to_pylist())

    def _batches(self, todo: set[str]) -> Iterator[Batch]:
        """Right-padded batches of the samples in `todo`, longest first (least padding)."""
        chosen = self.samples.filter(pc.is_in(self.samples.column("sample_id"), value_set=pa.array(sorted(todo), type=pa.string())))
        counts = chosen.column("token_count").to_numpy()
        order = np.argsort(-counts, kind="stable")
        for start in range(0, len(order), self.batch_size):
            part = chosen.take(pa.array(order[start : start + self.batch_size]))
            flat = torch.from_numpy(pc.list_flatten(part.column("token_ids")).to_numpy().astype(np.int64))
            part_counts = part.column("token_count").to_numpy().astype(np.int64)
            input_ids, mask = codec.pad_rows(flat, part_counts)
            yield part.column("sample_id").to_pylist(), input_ids, mask.long(), part_counts

    def _forward(self, todo: set[str], step: Callable[[Batch, Any], None]) -> None:
        if not todo:
            return
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in self._batches(todo):
                _, input_ids, mask, counts = batch
                with torch.inference_mode():
                    out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
                self.tokens += int(counts.sum())
                step(batch, out)
        finally:
            self.model.train(was_training)

    def _add_stats(self, batch: Batch, out: Any, need: dict[int, set[str]]) -> None:
        ids, _, mask, _ = batch
        for layer in self.layers:
            rows = [i for i, sid in enumerate(ids) if sid in need[layer]]
            if not rows:
                continue
            hidden = out.hidden_states[layer][rows]
            stats = self.stats.setdefault(layer, RunningStats.empty(hidden.shape[-1]))
            stats.update(hidden, mask[rows], [ids[i] for i in rows])
            row = {name: [value] for name, value in stats.to_row(self.fingerprint, layer).items()}
            self._table(self.stats_table, Kind.ACTIVATION_STATS).merge(row, on=STATS_KEYS)

    def _write_states(self, batch: Batch, out: Any, need: dict[int, set[str]]) -> None:
        ids, _, mask, counts = batch
        for position, layer in enumerate(self.layers):
            rows = [i for i, sid in enumerate(ids) if sid in need[layer]]
            if not rows:
                continue
            keep = mask[rows].bool().to(out.hidden_states[layer].device)
            tokens = out.hidden_states[layer][rows][keep]
            zones = self.precision == "zones"
            neg_pos = self.stats[layer].thresholds(self.zone_k) if zones else (None, None)
            table: dict[str, Any] = {
                "sample_id": [ids[i] for i in rows],
                "model_fingerprint": [self.fingerprint] * len(rows),
                "layer": [layer] * len(rows),
                "precision": [self.precision] * len(rows),
                "token_count": counts[rows].astype(np.int32),
                "hidden_dim": [tokens.shape[-1]] * len(rows),
                "zone_k": [self.zone_k if zones else None] * len(rows),
                "stats_count": [self.stats[layer].count if zones else None] * len(rows),
                "states": codec.encode_rows(tokens, counts[rows], self.precision, *neg_pos),
            }
            if self.topk and position == 0:
                table.update(self._topk(out, rows, keep, counts[rows]))
            self._table(self.states_table, Kind.ACTIVATION_STATES).merge(pa.table(table), on=STATE_KEYS)
            self.written += len(rows)

    def _topk(self, out: Any, rows: list[int], keep: torch.Tensor, counts: np.ndarray) -> dict[str, pa.Array]:
        logits = out.logits
        values, indices = logits[rows].float().topk(min(self.topk, logits.shape[-1]), dim=-1)
        k = values.shape[-1]
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts * k)]).astype(np.int32))
        return {
            "topk_indices": pa.ListArray.from_arrays(offsets, pa.array(indices[keep].reshape(-1).cpu().numpy().astype(np.int32))),
            "topk_values": pa.ListArray.from_arrays(offsets, pa.array(values[keep].reshape(-1).cpu().numpy())),
        }
