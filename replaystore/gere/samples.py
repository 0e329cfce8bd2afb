"""General replay texts: read them from JSONL, Parquet or any iterable, tokenize, store once.

A text's sha256 is its identity: ingesting the same text twice (in one call, in two calls, or
from two processes at once) keeps one row. Token ids are stored without special tokens and
truncated to `max_length` (GeRe's 563 = 512 + 50 + 1, capped at the tokenizer's and model's own
limit), so every later distillation and replay uses exactly the same tokens; `retokenize` redoes
them for another limit.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replaystore.errors import ValidationError
from replaystore.schemas import Kind
from replaystore.store import Edit, Store

SAMPLES_TABLE = Kind.GENERAL_SAMPLES.value
STATES_TABLE = Kind.ACTIVATION_STATES.value
DEFAULT_MAX_LENGTH = 563
NO_LIMIT = 10**9  # transformers writes int(1e30) as the model_max_length of a tokenizer with no limit


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_texts(texts: str | Path | Iterable[str], text_field: str = "text") -> Iterator[str]:
    """Texts from a `.jsonl` / `.parquet` file (column `text_field`) or from an iterable of strings."""
    if isinstance(texts, (str, Path)):
        path = Path(texts)
        if not path.is_file():
            raise ValidationError("texts", f"{str(texts)!r} is not a file; pass a .jsonl/.parquet path or an iterable of strings")
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            if text_field not in table.column_names:
                raise ValidationError(text_field, f"no such column in {path} (has: {', '.join(table.column_names)})")
            yield from table.column(text_field).to_pylist()
        elif path.suffix in {".jsonl", ".json"}:
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield _json_text(line, text_field, f"{path}:{number}")
        else:
            raise ValidationError("texts", f"unsupported file type {path.suffix!r}: use .jsonl or .parquet")
        return
    yield from texts


def _json_text(line: str, text_field: str, where: str) -> Any:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationError("texts", f"{where} is not valid JSON: {exc.msg}") from None
    if not isinstance(record, dict) or text_field not in record:
        raise ValidationError(text_field, f"missing in {where}")
    return record[text_field]


def tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def check_max_length(max_length: int) -> int:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValidationError("max_length", f"must be a positive integer, got {max_length!r}")
    return max_length


def token_limit(tokenizer: Any = None, model: Any = None) -> int | None:
    """The most tokens the model (`max_position_embeddings`) and tokenizer (`model_max_length`) take.

    None when neither states a limit. MiniLM takes 512, so GeRe's 563 is capped there.
    """
    limits = [getattr(getattr(model, "config", None), "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    known = [int(v) for v in limits if isinstance(v, int) and not isinstance(v, bool) and 0 < v < NO_LIMIT]
    return min(known) if known else None


def capped_length(max_length: int, tokenizer: Any = None, model: Any = None) -> int:
    """`max_length`, lowered to what the model and tokenizer take."""
    check_max_length(max_length)
    limit = token_limit(tokenizer, model)
    return max_length if limit is None else min(max_length, limit)


def tokenize(tokenizer: Any, texts: list[str], max_length: int = DEFAULT_MAX_LENGTH) -> list[list[int]]:
    """Token ids without special tokens, truncated to `max_length` capped at the tokenizer's own
    limit (one batched tokenizer call)."""
    max_length = capped_length(max_length, tokenizer)
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def retokenize(
    store: Store,
    tokenizer: Any,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    model: Any = None,
    sample_ids: list[str] | None = None,
    table: str = SAMPLES_TABLE,
    states_table: str = STATES_TABLE,
) -> dict[str, Any]:
    """Tokenize stored samples again from their text, e.g. down to a model's 512 positions.

    `max_length` is capped at what `tokenizer` (and `model`, if given) take. Only samples whose
    tokens change are rewritten, in one commit; if any of them already has distilled states, nothing
    is written (those states and statistics were made from the old tokens). Returns
    `{"retokenized", "unchanged", "max_length", "version"}`.
    """
    max_length = capped_length(max_length, tokenizer, model)
    samples = read_samples(store, sample_ids, table)
    ids = tokenize(tokenizer, samples.column("text").to_pylist(), max_length)
    old = samples.column("token_ids").to_pylist()
    changed = [i for i, (new, before) in enumerate(zip(ids, old, strict=True)) if new != before]
    changed_ids = [samples.column("sample_id")[i].as_py() for i in changed]
    states = store.find(states_table) if changed else None
    if states is not None:
        wanted = pa.array(changed_ids, type=pa.string())
        stored = states.read(columns=["sample_id"]).column("sample_id")
        distilled = pc.filter(wanted, pc.is_in(wanted, value_set=stored.combine_chunks()))
        if len(distilled):
            raise ValidationError(
                "sample_ids",
                f"{len(distilled)} sample(s) whose tokens would change have distilled states in '{states_table}' "
                f"(e.g. {distilled[0].as_py()!r}): drop '{states_table}' and the statistics table, then re-tokenize and distill again",
            )
    target = store.table(table)
    if changed:
        stored_rows = target.read()
        rows = stored_rows.filter(pc.is_in(stored_rows.column("sample_id"), value_set=pa.array(changed_ids, type=pa.string())))
        fresh = dict(zip(changed_ids, (ids[i] for i in changed), strict=True))
        new_ids = [fresh[sid] for sid in rows.column("sample_id").to_pylist()]
        for name, values in (
            ("token_ids", pa.array(new_ids, type=pa.list_(pa.int32()))),
            ("token_count", pa.array([len(t) for t in new_ids], type=pa.int32())),
            ("tokenizer", pa.array([tokenizer_name(tokenizer)] * len(new_ids), type=pa.string())),
        ):
            rows = rows.set_column(rows.schema.get_field_index(name), name, values)
        target.merge(rows, on="sample_id")
    return {"retokenized": len(changed), "unchanged": samples.num_rows - len(changed), "max_length": max_length, "version": target.version}


def ingest(
    store: Store,
    texts: str | Path | Iterable[str],
    *,
    source: str,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    text_field: str = "text",
    table: str = SAMPLES_TABLE,
    chunk_size: int = 10_000,
) -> dict[str, Any]:
    """Add general texts to `table`, skipping any whose content hash is already there.

    Returns `{"added", "skipped", "read", "version"}`. `max_length` is capped at the tokenizer's
    `model_max_length`. Every text is checked before anything is written; then each chunk of `chunk_size` texts is one insert of its new texts, committed onto the version it checked, so
    concurrent ingesters never store a text twice.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValidationError("source", "must be a non-empty corpus name")
    check_max_length(max_length)
    every = list(read_texts(texts, text_field))
    for i, text in enumerate(every):  # all of it is checked before anything is written
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("text", f"item {i} must be a non-empty string, got {text!r:.60}")
    target = store.table(table, create=Kind.GENERAL_SAMPLES)
    added = 0
    for start in range(0, len(every), chunk_size):
        rows = _rows(every[start : start + chunk_size], source, tokenizer, max_length)
        _, fresh = target.atomically(functools.partial(_unstored, rows=rows))
        added += fresh
    return {"added": added, "skipped": len(every) - added, "read": len(every), "version": target.version}


def _rows(chunk: list[str], source: str, tokenizer: Any, max_length: int) -> pa.Table:
    """The rows of one chunk of texts, first copy of each text only."""
    hashes = [content_hash(text) for text in chunk]
    _, first = np.unique(np.asarray(hashes), return_index=True)
    keep = np.sort(first)
    texts = [chunk[i] for i in keep]
    kept_hashes = [hashes[i] for i in keep]
    token_ids = tokenize(tokenizer, texts, max_length) if tokenizer is not None else None
    return pa.table(
        {
            "sample_id": [h[:16] for h in kept_hashes],
            "source": [source] * len(texts),
            "text": texts,
            "token_ids": pa.array(token_ids if token_ids is not None else [None] * len(texts), type=pa.list_(pa.int32())),
            "token_count": pa.array([len(t) for t in token_ids] if token_ids is not None else [None] * len(texts), type=pa.int32()),
            "content_hash": kept_hashes,
            "tokenizer": [tokenizer_name(tokenizer) if tokenizer is not None else None] * len(texts),
        }
    )


def _unstored(ds: lance.LanceDataset, rows: pa.Table) -> tuple[Edit | None, int]:
    """An insert of the rows whose text is not in version `ds` (committed onto `ds` only, so two
    ingesters on any machines never store a text twice), and how many they are."""
    stored = ds.to_table(columns=["content_hash"]).column("content_hash")
    fresh = rows.filter(pc.invert(pc.is_in(rows.column("content_hash"), value_set=stored.combine_chunks())))
    return (Edit(insert=fresh) if fresh.num_rows else None), fresh.num_rows


def read_samples(store: Store, sample_ids: list[str] | None = None, table: str = SAMPLES_TABLE) -> pa.Table:
    """The samples (all, or the given ids in the order given); unknown ids are an error."""
    samples = store.read(table, columns=["sample_id", "text", "token_ids", "token_count", "tokenizer"])
    if sample_ids is None:
        return samples
    index = {sid: i for i, sid in enumerate(samples.column("sample_id").to_pylist())}
    missing = [sid for sid in sample_ids if sid not in index]
    if missing:
        raise ValidationError("sample_ids", f"{len(missing)} id(s) not in '{table}', e.g. {missing[0]!r}")
    return samples.take(pa.array([index[sid] for sid in sample_ids], type=pa.int64()))
