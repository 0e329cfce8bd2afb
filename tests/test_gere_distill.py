"""GeRe ingest → distill → replay on real Lance tables, a tiny GPT-2 and the pretrained MiniLM."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from replaystore import Store
from replaystore.errors import NotFoundError, ValidationError
from replaystore.gere import (
    ModelMismatchError,
    ReplaySet,
    distill,
    ingest,
    kl_loss,
    load_replay_batch,
    load_stats,
    model_fingerprint,
    read_samples,
    replay_losses,
    retokenize,
    tm_margin_loss,
    token_limit,
)
from replaystore.gere.offline import minilm_path, minilm_tokenizer, python_docstrings, tiny_causal_lm, word_tokenizer

torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return python_docstrings(12)


@pytest.fixture(scope="module")
def tokenizer(texts: list[str]) -> Any:
    return word_tokenizer(texts, vocab_size=800)


@pytest.fixture(scope="module")
def model(tokenizer) -> torch.nn.Module:
    return tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64).eval()


def single_forward(model: torch.nn.Module, ids: list[int], layer: int = -1) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]


def numpy_stats(model: torch.nn.Module, token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray, int]:
    tokens = np.concatenate([single_forward(model, ids).double().numpy() for ids in token_ids])
    return tokens.mean(0), tokens.var(0), len(tokens)


# -- ingest ---------------------------------------------------------------------------------------


def test_ingest_dedups_by_content_and_truncates_without_special_tokens(store: Store, texts: list[str]) -> None:
    tok = minilm_tokenizer()
    first = ingest(store, texts[:5] + texts[:2], source="pydoc", tokenizer=tok, max_length=16)
    again = ingest(store, texts[3:8], source="pydoc", tokenizer=tok, max_length=16)
    assert (first["added"], first["skipped"]) == (5, 2)
    assert (again["added"], again["skipped"]) == (3, 2)
    rows = store.read("general_samples").to_pylist()
    assert len(rows) == 8 and len({r["content_hash"] for r in rows}) == 8
    by_text = {r["text"]: r for r in rows}
    for text in texts[:8]:
        expected = tok(text, add_special_tokens=False)["input_ids"][:16]
        assert by_text[text]["token_ids"] == expected and by_text[text]["token_count"] == len(expected)
        assert tok.cls_token_id not in expected and tok.sep_token_id not in expected
    assert {r["tokenizer"] for r in rows} == {str(minilm_path())}


def test_ingest_reads_jsonl_and_parquet(tmp_path: Path, store: Store, texts: list[str]) -> None:
    jsonl = tmp_path / "general.jsonl"
    jsonl.write_text("\n".join(json.dumps({"content": t, "meta": 1}) for t in texts[:3]) + "\n\n")
    parquet = tmp_path / "general.parquet"
    pq.write_table(pa.table({"content": texts[2:6]}), parquet)
    assert ingest(store, jsonl, source="a", text_field="content")["added"] == 3
    assert ingest(store, str(parquet), source="b", text_field="content") == {"added": 3, "skipped": 1, "read": 4, "version": 3}
    assert store.count("general_samples", filter="source = 'b'") == 3
    assert store.count("general_samples", filter="token_ids IS NULL") == 6  # tokenized later by distill


@pytest.mark.parametrize(
    ("texts", "kwargs", "field"),
    [
        (["fine", 42], {}, "text"),
        (["first chunk is fine", "second", ""], {"chunk_size": 1}, "text"),
        (["fine", "   "], {}, "text"),
        (["fine"], {"source": ""}, "source"),
        (["fine"], {"max_length": 0}, "max_length"),
        ("no-such-file.jsonl", {}, "texts"),
    ],
)
def test_ingest_refuses_bad_input_and_leaves_the_store_unchanged(store: Store, texts, kwargs: dict, field: str) -> None:
    ingest(store, ["an existing general text"], source="pydoc")
    version = store.dataset("general_samples").version
    with pytest.raises(ValidationError) as err:
        ingest(store, texts, **{"source": "pydoc", **kwargs})
    assert err.value.field == field
    assert store.dataset("general_samples").version == version and store.count("general_samples") == 1


def test_ingest_names_the_missing_jsonl_field(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(ValidationError, match=r"text: missing in .*bad.jsonl:2"):
        ingest(store, path, source="x")


def test_concurrent_ingesters_store_each_text_once(store: Store, texts: list[str]) -> None:
    results: list[dict] = []
    workers = [threading.Thread(target=lambda: results.append(ingest(store, texts, source="pydoc"))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert store.count("general_samples") == len(texts)
    assert sum(r["added"] for r in results) == len(texts)


# -- distillation ---------------------------------------------------------------------------------


def test_distilled_states_and_stats_ignore_padding(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:6] + ["tiny"], source="pydoc", tokenizer=tokenizer, max_length=40)
    summary = distill(store, model, batch_size=3)
    samples = read_samples(store)
    token_ids = samples.column("token_ids").to_pylist()
    lengths = sorted(len(t) for t in token_ids)
    assert lengths[0] == 1 and lengths[-1] == 40  # a one-token sample and truncated ones, padded together
    assert summary["states_written"] == 7 and summary["forwarded_tokens"] == sum(lengths)
    replay = ReplaySet.load(store, model)
    batch = replay.batch(samples.column("sample_id").to_pylist())
    for row, ids in enumerate(token_ids):
        n = len(ids)
        assert batch.input_ids[row, :n].tolist() == ids and batch.attention_mask[row].sum() == n
        torch.testing.assert_close(batch.states[row, :n], single_forward(model, ids), atol=1e-5, rtol=1e-5)
        assert batch.states[row, n:].abs().sum() == 0
    mean, var, count = numpy_stats(model, token_ids)
    stats = load_stats(store, summary["model_fingerprint"], -1)
    assert stats.count == count == summary["stats_count"][-1]
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.var, var, rtol=1e-4, atol=1e-6)


def test_minilm_states_are_padding_correct(store: Store, texts: list[str]) -> None:
    tok = minilm_tokenizer()
    from transformers import AutoModel

    minilm = AutoModel.from_pretrained(str(minilm_path())).eval()
    ingest(store, texts[:4], source="pydoc", tokenizer=tok, max_length=24)
    ingest(store, ["short text"], source="pydoc", tokenizer=tok)
    summary = distill(store, minilm, batch_size=5, precision="float16")
    replay = ReplaySet.load(store, minilm)
    samples = read_samples(store)
    batch = replay.batch(samples.column("sample_id").to_pylist())
    for row, ids in enumerate(samples.column("token_ids").to_pylist()):
        expected = single_forward(minilm, ids)
        torch.testing.assert_close(batch.states[row, : len(ids)], expected.half().float(), atol=2e-3, rtol=2e-3)
    tokens = np.concatenate([single_forward(minilm, ids).double().numpy() for ids in samples.column("token_ids").to_pylist()])
    stats = load_stats(store, summary["model_fingerprint"], -1)
    np.testing.assert_allclose(stats.mean, tokens.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.std, tokens.std(0), rtol=1e-4, atol=1e-5)


def test_resumed_distillation_stores_each_sample_once(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:8], source="pydoc", tokenizer=tokenizer, max_length=24)
    calls = {"n": 0}

    def crash_on_third_batch(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")

    handle = model.register_forward_pre_hook(crash_on_third_batch, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            distill(store, model, batch_size=2)
    finally:
        handle.remove()
    assert store.count("activation_states") == 4
    resumed = distill(store, model, batch_size=2)
    assert resumed["already_stored"] == 4 and resumed["states_written"] == 4
    assert store.count("activation_states") == 8
    again = distill(store, model, batch_size=2)
    assert again["states_written"] == 0 and again["forwarded_tokens"] == 0
    stats = load_stats(store, resumed["model_fingerprint"], -1)
    assert sorted(stats.sample_ids) == sorted(read_samples(store).column("sample_id").to_pylist())
    mean, _, count = numpy_stats(model, read_samples(store).column("token_ids").to_pylist())
    assert stats.count == count
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-5, atol=1e-6)


def test_states_from_another_model_are_refused(tmp_path: Path, store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:3], source="pydoc", tokenizer=tokenizer, max_length=16)
    model.save_pretrained(tmp_path / "frozen")
    summary = distill(store, str(tmp_path / "frozen"))
    assert summary["model_fingerprint"] == model_fingerprint(model)  # same weights and config, from a folder
    other = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64)
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other.transformer.h[0].mlp.c_fc.weight[0, 0] += 1e-3
    assert model_fingerprint(other) != summary["model_fingerprint"]
    with pytest.raises(ModelMismatchError, match=summary["model_fingerprint"]):
        ReplaySet.load(store, other)
    with pytest.raises(ValidationError, match="model_fingerprint"):
        ReplaySet.load(store, "not-a-fingerprint")


def test_zone_codes_give_the_same_tm_loss_as_float_states(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:5], source="pydoc", tokenizer=tokenizer, max_length=24)
    distill(store, model, precision="float32", batch_size=4)
    distill(store, model, precision="zones", batch_size=4)
    with pytest.raises(ValidationError, match="precision"):
        ReplaySet.load(store, model)
    floats = ReplaySet.load(store, model, precision="float32")
    codes = ReplaySet.load(store, model, precision="zones")
    ids = floats.sample_ids
    fb, zb = floats.batch(ids), codes.batch(ids)
    assert zb.states is None and zb.zones is not None and torch.equal(zb.zones, floats.batch(ids, as_zones=True).zones)
    moved = fb.states + 0.7 * torch.randn(fb.states.shape, generator=torch.Generator().manual_seed(0))
    full = tm_margin_loss(moved, fb.neg, fb.pos, frozen=fb.states, mask=fb.attention_mask)
    zoned = tm_margin_loss(moved, zb.neg, zb.pos, zones=zb.zones, mask=zb.attention_mask)
    assert full.item() > 0 and zoned.item() == pytest.approx(full.item(), abs=1e-6)
    zone_bytes = sum(len(v) for v in store.read("activation_states", filter="precision = 'zones'").column("states").to_pylist())
    float_bytes = sum(len(v) for v in store.read("activation_states", filter="precision = 'float32'").column("states").to_pylist())
    assert zone_bytes * 16 == pytest.approx(float_bytes, rel=0.01)


def test_new_samples_refresh_zone_codes_made_with_older_statistics(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:3], source="pydoc", tokenizer=tokenizer, max_length=16)
    distill(store, model, precision="zones")
    ingest(store, texts[3:5], source="pydoc", tokenizer=tokenizer, max_length=16)
    with pytest.raises(NotFoundError):
        ReplaySet.load(store, model, sample_ids=read_samples(store).column("sample_id").to_pylist())
    summary = distill(store, model, precision="zones")
    assert summary["states_written"] == 5  # 2 new + 3 whose thresholds moved
    assert len(ReplaySet.load(store, model)) == 5
    with pytest.raises(ValidationError, match="k"):
        ReplaySet.load(store, model, k=2.0)


def test_half_precisions_and_top_k_logits(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:4], source="pydoc", tokenizer=tokenizer, max_length=16)
    distill(store, model, precision="float32")
    distill(store, model, precision="bfloat16", topk=5)
    exact = ReplaySet.load(store, model, precision="float32")
    ids = exact.sample_ids
    reference = exact.batch(ids).states
    half = load_replay_batch(store, model, ids, precision="bfloat16")
    torch.testing.assert_close(half.states, reference.bfloat16().float())
    with torch.no_grad():
        logits = model(input_ids=half.input_ids, attention_mask=half.attention_mask).logits
    values, indices = logits.topk(5, -1)
    real = half.attention_mask.bool()
    assert torch.equal(half.topk_indices[real], indices[real])
    torch.testing.assert_close(half.topk_values[real], values[real])
    assert kl_loss(logits, half.topk_values, half.attention_mask, indices=half.topk_indices).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"precision": "int8"}, "precision"),
        ({"layers": (7,)}, "layers"),
        ({"layers": ()}, "layers"),
        ({"batch_size": 0}, "batch_size"),
        ({"zone_k": -1.0}, "k"),
        ({"topk": -2}, "topk"),
        ({"sample_ids": ["nope"]}, "sample_ids"),
    ],
)
def test_distill_refuses_bad_settings_before_writing(store: Store, texts: list[str], tokenizer, model, kwargs: dict, field: str) -> None:
    ingest(store, texts[:2], source="pydoc", tokenizer=tokenizer, max_length=8)
    with pytest.raises(ValidationError) as err:
        distill(store, model, **kwargs)
    assert err.value.field == field
    assert not store.exists("activation_states") and not store.exists("activation_stats")


def test_distill_tokenizes_samples_ingested_without_tokens(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:2], source="pydoc")
    with pytest.raises(ValidationError, match="tokenizer"):
        distill(store, model)
    summary = distill(store, model, tokenizer, max_length=12)
    assert summary["states_written"] == 2
    assert store.read("general_samples", columns=["token_count"]).column("token_count").to_pylist() == [12, 12]
    with pytest.raises(ValidationError, match="topk"):
        from transformers import AutoModel

        distill(store, AutoModel.from_pretrained(str(minilm_path())), topk=3)


def test_several_layers_get_their_own_states_and_statistics(store: Store, texts: list[str], tokenizer, model) -> None:
    ingest(store, texts[:3], source="pydoc", tokenizer=tokenizer, max_length=12)
    summary = distill(store, model, layers=(1, -1), batch_size=2)
    assert summary["states_written"] == 6 and set(summary["stats_count"]) == {1, -1}
    middle = ReplaySet.load(store, model, layer=1)
    batch = middle.batch(middle.sample_ids)
    for row, ids in enumerate(read_samples(store, middle.sample_ids).column("token_ids").to_pylist()):
        torch.testing.assert_close(batch.states[row, : len(ids)], single_forward(model, ids, layer=1), atol=1e-5, rtol=1e-5)
    first, last = load_stats(store, summary["model_fingerprint"], 1), load_stats(store, summary["model_fingerprint"], -1)
    assert first.count == last.count and not np.allclose(first.mean, last.mean)


# -- the model's own position limit ---------------------------------------------------------------


@pytest.fixture(scope="module")
def long_text(texts: list[str]) -> str:
    return " ".join(texts)  # well over 563 tokens for either tokenizer


def test_readme_flow_runs_with_minilm_at_the_default_max_length(store: Store, texts: list[str], long_text: str) -> None:
    from transformers import AutoModel

    tok, minilm = minilm_tokenizer(), AutoModel.from_pretrained(str(minilm_path())).eval()
    assert token_limit(tok, minilm) == 512
    ingest(store, [long_text, *texts[:2]], source="pydoc", tokenizer=tok)  # max_length=563 by default
    assert max(read_samples(store).column("token_count").to_pylist()) == 512
    distill(store, minilm, precision="zones", layers=(-1,), batch_size=8)
    parts = replay_losses(minilm, ReplaySet.load(store, minilm).next(3))
    assert parts.margin.item() == 0.0 and parts.ce.item() == 0.0  # frozen model: in every zone; no LM head: no CE


def test_samples_longer_than_the_model_takes_are_refused_then_retokenized(store: Store, long_text: str, tokenizer) -> None:
    short_model = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=48).eval()
    ingest(store, [long_text, "a short text"], source="pydoc", tokenizer=tokenizer)  # no tokenizer limit: 563 tokens
    assert max(read_samples(store).column("token_count").to_pylist()) == 563
    version = store.dataset("general_samples").version
    with pytest.raises(ValidationError, match=r"token_ids: 1 sample\(s\) .* up to 563 tokens but the model takes 48 .*retokenize"):
        distill(store, short_model)
    assert not store.exists("activation_states") and not store.exists("activation_stats")
    assert store.dataset("general_samples").version == version
    result = retokenize(store, tokenizer, model=short_model)
    assert result["retokenized"] == 1 and result["unchanged"] == 1 and result["max_length"] == 48
    long_id = [r["sample_id"] for r in read_samples(store).to_pylist() if r["token_count"] == 48]
    assert len(long_id) == 1 and read_samples(store, long_id).column("token_ids")[0].as_py() == tokenizer(long_text, add_special_tokens=False)["input_ids"][:48]
    assert distill(store, short_model)["states_written"] == 2
    with pytest.raises(ValidationError, match="have distilled states"):
        retokenize(store, tokenizer, max_length=20)
    assert max(read_samples(store).column("token_count").to_pylist()) == 48


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_float_states_and_zone_codes_agree(store: Store, texts: list[str], tokenizer, dtype: torch.dtype) -> None:
    """GeRe's demo trains in bf16: codes made at distillation equal codes of the stored states, and both losses agree."""
    half = tiny_causal_lm(tokenizer.vocab_size, hidden=32, positions=64).to(dtype).eval()
    ingest(store, texts[:5], source="pydoc", tokenizer=tokenizer, max_length=24)
    distill(store, half, precision="float32", batch_size=4)
    distill(store, half, precision="zones", batch_size=4)
    floats, codes = ReplaySet.load(store, half, precision="float32"), ReplaySet.load(store, half, precision="zones")
    fb, zb = floats.batch(floats.sample_ids), codes.batch(floats.sample_ids)
    assert torch.equal(zb.zones, floats.batch(floats.sample_ids, as_zones=True).zones)
    with torch.no_grad():
        moved = half(input_ids=fb.input_ids, attention_mask=fb.attention_mask, output_hidden_states=True).hidden_states[-1]
    moved = (moved.float() + 0.5 * torch.randn(moved.shape, generator=torch.Generator().manual_seed(0))).to(dtype)
    full = tm_margin_loss(moved, fb.neg, fb.pos, frozen=fb.states, mask=fb.attention_mask)
    zoned = tm_margin_loss(moved, zb.neg, zb.pos, zones=zb.zones, mask=zb.attention_mask)
    assert full.dtype == torch.float32 and full.item() > 0 and torch.equal(full, zoned)
