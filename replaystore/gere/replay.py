"""Stored states back as torch tensors: a replay set for one model and layer, served in batches.

`ReplaySet.load` reads the states, token ids and thresholds once (a replay set is small: GeRe uses
1,000 texts) and checks they belong to the model given; `batch(ids)` decodes any subset with
vectorised Arrow/numpy/torch, and `next(n)` walks a seeded shuffle so every sample is replayed
once per epoch. `replay_losses` is the forward pass a training loop adds for the replay part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from replaystore.errors import NotFoundError, ValidationError
from replaystore.gere import codec
from replaystore.gere.fingerprint import ModelMismatchError, check_fingerprint, model_fingerprint
from replaystore.gere.losses import causal_lm_loss, tm_margin_loss
from replaystore.gere.samples import SAMPLES_TABLE, STATES_TABLE, read_samples
from replaystore.gere.stats import STATS_TABLE, check_k, load_stats
from replaystore.gere.zones import zone_codes
from replaystore.store import Store


@dataclass
class ReplayBatch:
    """Right-padded replay inputs and their frozen targets (`states` or `zones`, never both)."""

    sample_ids: list[str]
    layer: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    neg: torch.Tensor
    pos: torch.Tensor
    states: torch.Tensor | None = None
    zones: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    topk_values: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ReplayBatch:
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)


@dataclass
class ReplayLosses:
    ce: torch.Tensor
    margin: torch.Tensor


def replay_losses(model: torch.nn.Module, batch: ReplayBatch) -> ReplayLosses:
    """Forward the replay batch: causal-LM CE on the replay text and the TM margin at `batch.layer`.

    An encoder without a language-model head (MiniLM) has no replay CE: `ce` is 0 and only the
    margin keeps its activations.
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    hidden = out.hidden_states[batch.layer]
    margin = tm_margin_loss(hidden, batch.neg, batch.pos, frozen=batch.states, zones=batch.zones, mask=batch.attention_mask)
    logits = getattr(out, "logits", None)
    ce = margin.new_zeros(()) if logits is None else causal_lm_loss(logits, batch.input_ids, batch.attention_mask)
    return ReplayLosses(ce=ce, margin=margin)


class ReplaySet:
    """The general samples with the frozen states of one model and layer, in memory."""

    def __init__(self, samples: pa.Table, states: pa.Table, neg: torch.Tensor, pos: torch.Tensor, layer: int, precision: str, seed: int = 0) -> None:
        self.samples, self.states = samples, states
        self.neg, self.pos, self.layer, self.precision = neg, pos, layer, precision
        self.hidden_dim = int(states.column("hidden_dim")[0].as_py())
        self._index = {sid: i for i, sid in enumerate(states.column("sample_id").to_pylist())}
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0

    @classmethod
    def load(
        cls,
        store: Store,
        model: torch.nn.Module | str,
        *,
        layer: int = -1,
        precision: str | None = None,
        k: float | None = None,
        sample_ids: Sequence[str] | None = None,
        seed: int = 0,
        samples_table: str = SAMPLES_TABLE,
        states_table: str = STATES_TABLE,
        stats_table: str = STATS_TABLE,
    ) -> ReplaySet:
        """Load the states of `model` (a module, or its fingerprint) at `layer`.

        `precision` picks among stored encodings (needed only when several are stored); `k` is the
        threshold multiplier (default: the one zone codes were made with, else 1).
        """
        fingerprint = check_fingerprint(model) if isinstance(model, str) else model_fingerprint(model)
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ValidationError("layer", f"must be an integer hidden-state index, got {layer!r}")
        if precision is not None:
            codec.check_precision(precision)
        states = _states_of(store, states_table, fingerprint, layer, precision)
        if sample_ids is not None:
            states = _take_ids(states, list(sample_ids), f"states of model {fingerprint} layer {layer}")
        precision = _one_precision(states)
        stats = load_stats(store, fingerprint, layer, stats_table)
        k = _check_zone_k(states, stats.count, k) if precision == "zones" else check_k(1.0 if k is None else k)
        samples = read_samples(store, states.column("sample_id").to_pylist(), samples_table)
        stale = pc.not_equal(samples.column("token_count"), states.column("token_count"))
        if pc.any(stale).as_py():
            raise ValidationError("token_ids", "samples were re-tokenized after distillation: distill again")
        neg, pos = stats.thresholds(k)
        return cls(samples, states, neg, pos, layer, precision, seed)

    def __len__(self) -> int:
        return self.states.num_rows

    @property
    def sample_ids(self) -> list[str]:
        return list(self._index)

    def batch(self, sample_ids: Sequence[str], as_zones: bool = False) -> ReplayBatch:
        """Decode the given samples; `as_zones` turns float states into zone codes on the way."""
        missing = [sid for sid in sample_ids if sid not in self._index]
        if missing:
            raise ValidationError("sample_ids", f"{len(missing)} id(s) not in this replay set, e.g. {missing[0]!r}")
        return self._decode(np.asarray([self._index[sid] for sid in sample_ids], dtype=np.int64), as_zones)

    def next(self, n: int, as_zones: bool = False) -> ReplayBatch:
        """The next `n` samples of a seeded shuffle, reshuffled when an epoch is used up."""
        if not isinstance(n, int) or n < 1:
            raise ValidationError("n", f"must be a positive integer, got {n!r}")
        picked = []
        while n > 0:
            if self._cursor >= len(self._order):
                self._order, self._cursor = self._rng.permutation(len(self)), 0
            part = self._order[self._cursor : self._cursor + n]
            picked.append(part)
            self._cursor += len(part)
            n -= len(part)
        return self._decode(np.concatenate(picked), as_zones)

    def _decode(self, rows: np.ndarray, as_zones: bool) -> ReplayBatch:
        take = pa.array(rows, type=pa.int64())
        states, samples = self.states.take(take), self.samples.take(take)
        counts = states.column("token_count").to_numpy().astype(np.int64)
        flat_ids = torch.from_numpy(pc.list_flatten(samples.column("token_ids")).to_numpy().astype(np.int64))
        input_ids, mask = codec.pad_rows(flat_ids, counts)
        values, _ = codec.pad_rows(codec.decode_rows(states.column("states"), counts, self.hidden_dim, self.precision), counts)
        targets: dict[str, Any] = {"zones": values} if self.precision == "zones" else {"states": values}
        if as_zones and self.precision != "zones":
            targets = {"zones": zone_codes(values, self.neg, self.pos)}
        indices = states.column("topk_indices")
        if indices.null_count == 0:
            k = len(indices[0].as_py()) // int(counts[0])
            flat_idx = torch.from_numpy(pc.list_flatten(indices).to_numpy().astype(np.int64)).view(-1, k)
            flat_val = torch.from_numpy(pc.list_flatten(states.column("topk_values")).to_numpy().astype(np.float32)).view(-1, k)
            targets["topk_indices"], _ = codec.pad_rows(flat_idx, counts)
            targets["topk_values"], _ = codec.pad_rows(flat_val, counts)
        return ReplayBatch(
            sample_ids=states.column("sample_id").to_pylist(),
            layer=self.layer,
            input_ids=input_ids,
            attention_mask=mask.long(),
            neg=self.neg,
            pos=self.pos,
            **targets,
        )


def load_replay_batch(store: Store, model: torch.nn.Module | str, sample_ids: Sequence[str], **options: Any) -> ReplayBatch:
    """States + thresholds of the given samples as tensors (options as `ReplaySet.load`)."""
    as_zones = bool(options.pop("as_zones", False))
    return ReplaySet.load(store, model, sample_ids=sample_ids, **options).batch(sample_ids, as_zones=as_zones)


def _states_of(store: Store, table: str, fingerprint: str, layer: int, precision: str | None) -> pa.Table:
    stored = store.find(table)
    if stored is None:
        raise NotFoundError(f"no activation states: table '{table}' does not exist (distill first)")
    where = f"model_fingerprint = '{fingerprint}' AND layer = {layer}"
    if precision is not None:
        where += f" AND precision = '{precision}'"
    states = stored.read(filter=where)
    if states.num_rows:
        return states.combine_chunks()
    others = sorted(set(stored.read(columns=["model_fingerprint"]).column("model_fingerprint").to_pylist()) - {fingerprint})
    if others:
        raise ModelMismatchError(
            "model",
            f"fingerprint {fingerprint} has no states in '{table}' (layer {layer}); they were made by "
            f"{', '.join(others[:3])}: load that model or distill this one first",
        )
    raise NotFoundError(f"no states for model {fingerprint} layer {layer}{'' if precision is None else ' ' + precision} in '{table}'")


def _take_ids(states: pa.Table, sample_ids: list[str], what: str) -> pa.Table:
    index = {sid: i for i, sid in enumerate(states.column("sample_id").to_pylist())}
    missing = [sid for sid in sample_ids if sid not in index]
    if missing:
        raise NotFoundError(f"{len(missing)} sample(s) have no {what}, e.g. {missing[0]!r}")
    return states.take(pa.array([index[sid] for sid in sample_ids], type=pa.int64()))


def _one_precision(states: pa.Table) -> str:
    found = sorted(set(states.column("precision").to_pylist()))
    if len(found) > 1:
        raise ValidationError("precision", f"states are stored in several precisions {found}: choose one")
    return found[0]


def _check_zone_k(states: pa.Table, stats_count: int, k: float | None) -> float:
    """Zone codes fix k and the statistics they were made with; both must still hold."""
    made_with = sorted(set(states.column("zone_k").to_pylist()))
    if len(made_with) > 1 or (k is not None and made_with != [check_k(k)]):
        raise ValidationError("k", f"zone codes were made with k={made_with}; thresholds with k={k} would not match them")
    if pc.any(pc.not_equal(states.column("stats_count"), stats_count)).as_py():
        raise ValidationError("activation_states", "zone codes were made with older statistics: run distill again to refresh them")
    return float(made_with[0])
