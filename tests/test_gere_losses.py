"""GeRe losses, zone codes, codec and statistics on random tensors, against direct references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.errors import ValidationError
from replaystore.gere import codec, zones
from replaystore.gere.losses import (
    DynamicWeight,
    FixedWeight,
    causal_lm_loss,
    combine_losses,
    kl_loss,
    l1_feature_loss,
    l2_feature_loss,
    tm_margin_loss,
)
from replaystore.gere.stats import RunningStats
from replaystore.gere.trainer import ReplaySchedule


def reference_tm(hidden: torch.Tensor, frozen: torch.Tensor, neg: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GeRe's margin loss written out element by element in float64 (low and high both count at std 0)."""
    h, f = hidden.double().numpy(), frozen.double().numpy()
    n, p, m = neg.double().numpy(), pos.double().numpy(), mask.double().numpy()
    total, violating = 0.0, 0
    for b, t, d in np.ndindex(*h.shape):
        value = 0.0
        if f[b, t, d] <= n[d]:
            value += max(h[b, t, d] - n[d], 0.0)
        if f[b, t, d] >= p[d]:
            value += max(p[d] - h[b, t, d], 0.0)
        if n[d] < f[b, t, d] < p[d]:
            value += max(h[b, t, d] - p[d], 0.0) + max(n[d] - h[b, t, d], 0.0)
        value *= m[b, t]
        total += value
        violating += value != 0
    return torch.tensor(total / (violating + 1e-8))


def random_case(seed: int, batch: int, tokens: int, dim: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    frozen = torch.randn(batch, tokens, dim, generator=g)
    hidden = frozen + torch.randn(batch, tokens, dim, generator=g)
    mean, std = frozen.mean((0, 1)), frozen.std((0, 1), correction=0)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
    return hidden, frozen, mean - std, mean + std, mask


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), tokens=st.integers(1, 6), dim=st.integers(1, 7))
def test_tm_margin_matches_reference_from_floats_and_zone_codes(seed: int, batch: int, tokens: int, dim: int) -> None:
    hidden, frozen, neg, pos, mask = random_case(seed, batch, tokens, dim)
    expected = reference_tm(hidden, frozen, neg, pos, mask)
    full = tm_margin_loss(hidden, neg, pos, frozen=frozen, mask=mask)
    codes = zones.zone_codes(frozen, neg, pos)
    packed, offsets = zones.pack_rows(codes.numpy().reshape(-1), np.array([codes.numel()]))
    stored = torch.from_numpy(zones.unpack_rows(packed, np.array([codes.numel()]))).view_as(codes)
    from_zones = tm_margin_loss(hidden, neg, pos, zones=stored, mask=mask)
    assert full.item() == pytest.approx(expected.item(), abs=1e-6)
    assert from_zones.item() == pytest.approx(full.item(), abs=1e-6)
    assert offsets[-1] == (codes.numel() + 3) // 4


def test_tm_margin_is_zero_at_the_frozen_states_and_ignores_padding() -> None:
    hidden, frozen, neg, pos, mask = random_case(1, 3, 8, 5)
    assert tm_margin_loss(frozen, neg, pos, frozen=frozen, mask=mask).item() == 0.0
    moved = hidden.clone()
    moved[mask == 0] += 100.0  # padding positions change, the loss must not
    assert torch.equal(tm_margin_loss(moved, neg, pos, frozen=frozen, mask=mask), tm_margin_loss(hidden, neg, pos, frozen=frozen, mask=mask))


def test_tm_margin_gradient_pushes_activations_back_into_their_zone() -> None:
    _, frozen, neg, pos, mask = random_case(2, 2, 6, 4)
    hidden = (frozen + 3.0 * torch.randn_like(frozen)).requires_grad_(True)
    real = mask.bool()
    target = zones.zone_codes(frozen, neg, pos)[real]
    before = (zones.zone_codes(hidden.detach(), neg, pos)[real] == target).float().mean()
    optimizer = torch.optim.Adam([hidden], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        tm_margin_loss(hidden, neg, pos, frozen=frozen, mask=mask).backward()
        optimizer.step()
    after = (zones.zone_codes(hidden.detach(), neg, pos)[real] == target).float().mean()
    assert before < 0.7 and after > 0.9


def test_tm_margin_needs_exactly_one_target() -> None:
    hidden, frozen, neg, pos, _ = random_case(3, 1, 2, 2)
    with pytest.raises(ValidationError, match="exactly one"):
        tm_margin_loss(hidden, neg, pos)
    with pytest.raises(ValidationError, match="exactly one"):
        tm_margin_loss(hidden, neg, pos, frozen=frozen, zones=zones.zone_codes(frozen, neg, pos))
    with pytest.raises(ValidationError, match="hidden"):
        tm_margin_loss(hidden[:, :1], neg, pos, frozen=frozen)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 13), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_zone_rows_pack_and_unpack_exactly(lengths: list[int], seed: int) -> None:
    counts = np.asarray(lengths)
    codes = np.random.default_rng(seed).integers(0, 3, int(counts.sum())).astype(np.uint8)
    packed, offsets = zones.pack_rows(codes, counts)
    assert np.array_equal(np.diff(offsets), (counts + 3) // 4)
    assert np.array_equal(zones.unpack_rows(packed, counts), codes)


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_float_codec_round_trips_each_sample(precision: str) -> None:
    counts = np.array([3, 1, 5])
    values = torch.randn(int(counts.sum()), 6)
    encoded = codec.encode_rows(values, counts, precision)
    width = {"float32": 4, "float16": 2, "bfloat16": 2}[precision]
    assert [len(v.as_py()) for v in encoded] == (counts * 6 * width).tolist()
    decoded = codec.decode_rows(encoded, counts, 6, precision)
    expected = values.to(getattr(torch, precision)).float()
    assert torch.equal(decoded, expected)
    padded, mask = codec.pad_rows(decoded, counts)
    assert padded.shape == (3, 5, 6) and torch.equal(padded[mask], decoded) and padded[~mask].abs().sum() == 0


def test_zone_codec_round_trips_codes() -> None:
    counts = np.array([2, 3])
    values = torch.randn(5, 3)
    neg, pos = torch.full((3,), -0.5), torch.full((3,), 0.5)
    encoded = codec.encode_rows(values, counts, "zones", neg, pos)
    assert [len(v.as_py()) for v in encoded] == [2, 3]  # ceil(6/4), ceil(9/4)
    assert torch.equal(codec.decode_rows(encoded, counts, 3, "zones"), zones.zone_codes(values, neg, pos))
    with pytest.raises(ValidationError, match="precision"):
        codec.encode_rows(values, counts, "int8")
    with pytest.raises(ValidationError, match="thresholds"):
        codec.encode_rows(values, counts, "zones")


def test_running_stats_equal_numpy_float64_over_unpadded_tokens() -> None:
    hidden, _, _, _, mask = random_case(4, 4, 9, 6)
    hidden[mask == 0] = 1e6  # padding garbage must not leak in
    stats = RunningStats.empty(6)
    stats.update(hidden[:2], mask[:2], ["a", "b"])
    stats.update(hidden[2:], mask[2:], ["c", "d"])
    tokens = hidden.double().numpy()[mask.numpy().astype(bool)]
    assert stats.count == len(tokens) and stats.sample_ids == ["a", "b", "c", "d"]
    np.testing.assert_allclose(stats.mean, tokens.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, tokens.var(0), rtol=1e-9)
    neg, pos = stats.thresholds(2.0)
    np.testing.assert_allclose(pos.numpy(), tokens.mean(0) + 2 * tokens.std(0), rtol=1e-5)
    np.testing.assert_allclose(neg.numpy(), tokens.mean(0) - 2 * tokens.std(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValidationError, match="k"):
        stats.thresholds(float("nan"))
    with pytest.raises(ValidationError, match="hidden_dim"):
        stats.update(hidden[..., :3], mask, ["x"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_running_stats_do_not_depend_on_how_samples_are_batched(seed: int, cuts: list[int]) -> None:
    samples = sum(cuts)
    hidden, _, _, _, mask = random_case(seed, samples, 6, 4)
    whole, split = RunningStats.empty(4), RunningStats.empty(4)
    whole.update(hidden, mask, [str(i) for i in range(samples)])
    start = 0
    for size in cuts:
        split.update(hidden[start : start + size], mask[start : start + size], [str(i) for i in range(start, start + size)])
        start += size
    assert split.count == whole.count == int(mask.sum()) and split.sample_ids == whole.sample_ids
    np.testing.assert_allclose(split.total_sum, whole.total_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(split.total_squared_sum, whole.total_squared_sum, rtol=1e-12, atol=1e-12)


def test_feature_losses_match_direct_formulas() -> None:
    hidden, frozen, _, _, mask = random_case(5, 2, 5, 3)
    real = mask.bool()
    assert l1_feature_loss(hidden, frozen, mask).item() == pytest.approx((hidden - frozen)[real].abs().mean().item(), rel=1e-5)
    assert l2_feature_loss(hidden, frozen, mask).item() == pytest.approx(F.mse_loss(hidden[real], frozen[real]).item(), rel=1e-5)


def test_kl_loss_matches_torch_and_restricts_to_top_k() -> None:
    g = torch.Generator().manual_seed(6)
    student, teacher = torch.randn(2, 4, 11, generator=g), torch.randn(2, 4, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    t = 2.0
    per_token = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="none").sum(-1)
    expected = per_token[mask.bool()].mean() * t**2
    assert kl_loss(student, teacher, mask, temperature=t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl_loss(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    values, indices = teacher.topk(3, -1)
    restricted = kl_loss(student, values, mask, temperature=t, indices=indices)
    assert restricted.item() == pytest.approx(kl_loss(student.gather(-1, indices), values, mask, temperature=t).item(), rel=1e-6)
    with pytest.raises(ValidationError, match="temperature"):
        kl_loss(student, teacher, temperature=0.0)


def test_causal_lm_loss_is_next_token_cross_entropy_without_padding() -> None:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 5, 9, generator=g)
    ids = torch.randint(0, 9, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    pairs = [(b, t) for b in range(2) for t in range(4) if mask[b, t + 1]]
    expected = torch.stack([F.cross_entropy(logits[b, t][None], ids[b, t + 1][None]) for b, t in pairs]).mean()
    assert causal_lm_loss(logits, ids, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_weighting_fixed_and_dynamic() -> None:
    task, replay = torch.tensor(2.0), torch.tensor(4.0)
    margin = torch.tensor(0.5, requires_grad=True)
    assert combine_losses(task, replay, margin, FixedWeight(100.0)).item() == pytest.approx(3.0 + 50.0)
    total = combine_losses(task, replay, margin, DynamicWeight())
    assert total.item() == pytest.approx(6.0)  # the margin term is scaled to the CE (3.0)
    total.backward()
    assert margin.grad is not None and margin.grad.item() == pytest.approx(6.0)  # w = 3/0.5, no gradient through w
    assert combine_losses(task, replay, torch.tensor(0.0), DynamicWeight()).item() == pytest.approx(3.0)


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 40), accumulation=st.integers(1, 6), world=st.integers(1, 4))
def test_schedule_gives_exactly_k_per_global_batch(k: int, accumulation: int, world: int) -> None:
    schedule = ReplaySchedule(k=k)
    counts = [schedule.count(8, micro, accumulation, rank, world) for micro in range(accumulation) for rank in range(world)]
    assert sum(counts) == k and max(counts) - min(counts) <= 1


@settings(max_examples=50, deadline=None)
@given(proportion=st.floats(0.01, 0.9), batches=st.lists(st.integers(1, 16), min_size=1, max_size=40))
def test_schedule_proportion_holds_over_any_run(proportion: float, batches: list[int]) -> None:
    schedule = ReplaySchedule(proportion=proportion)
    replayed = sum(schedule.count(b) for b in batches)
    task = sum(batches)
    assert abs(replayed - task * proportion / (1 - proportion)) < 1


@pytest.mark.parametrize("kwargs", [{}, {"k": 2, "proportion": 0.1}, {"k": 0}, {"proportion": 1.0}, {"proportion": -0.1}])
def test_schedule_refuses_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        ReplaySchedule(**kwargs)
