"""GeRe's own margin-loss lines (tests/fixtures/gere/margin_loss.txt, Apache-2.0) against ours.

The fixture is executed as GeRe wrote it, with GeRe's float32 statistics and float32 saved states
and a bfloat16 / float16 model's hidden states, so dtype promotion happens exactly as in GeRe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaystore.gere import zones
from replaystore.gere.losses import tm_margin_loss

GERE_MARGIN = (Path(__file__).parent / "fixtures" / "gere" / "margin_loss.txt").read_text()


def gere_stats(frozen: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """GeRe's float32 running statistics over the real tokens (GeRePresaveCallback.on_train_begin)."""
    tokens = frozen[mask.bool()].float()
    total_sum, total_squared_sum = tokens.sum(0), (tokens**2).sum(0)
    mean = total_sum / tokens.shape[0]
    var = total_squared_sum / tokens.shape[0] - mean**2
    return {"mean": mean, "std": var.clamp_min(0) ** 0.5}


def gere_margin(stats: dict, frozen: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    scope = {"torch": torch, "stats": stats, "gere_hidden_states": frozen.float(), "pred_hidden": hidden, "attention_mask": mask}
    exec(GERE_MARGIN, scope)  # GeRe's published lines, verbatim
    return scope["margin_loss"], scope


def case(seed: int, dtype: torch.dtype, batch: int, tokens: int, dim: int, flat_dims: int) -> tuple[torch.Tensor, ...]:
    """A frozen model's states and a moved model's states in `dtype`; `flat_dims` dimensions are constant (std 0)."""
    g = torch.Generator().manual_seed(seed)
    frozen = (torch.randn(batch, tokens, dim, generator=g) * 3).to(dtype)
    frozen[..., :flat_dims] = 0.75
    hidden = (frozen.float() + torch.randn(batch, tokens, dim, generator=g)).to(dtype)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
    return frozen, hidden, mask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), tokens=st.integers(1, 9), dim=st.integers(1, 12), flat=st.integers(0, 2))
def test_tm_margin_equals_gere_in_half_precision(dtype: torch.dtype, seed: int, batch: int, tokens: int, dim: int, flat: int) -> None:
    frozen, hidden, mask = case(seed, dtype, batch, tokens, dim, min(flat, dim))
    stats = gere_stats(frozen, mask)
    expected, scope = gere_margin(stats, frozen, hidden, mask)
    neg, pos = scope["neg_thr"], scope["pos_thr"]
    from_states = tm_margin_loss(hidden, neg, pos, frozen=frozen, mask=mask)
    codes = zones.zone_codes(frozen, neg, pos)
    from_codes = tm_margin_loss(hidden, neg, pos, zones=codes, mask=mask)
    assert expected.dtype == from_states.dtype == from_codes.dtype == torch.float32
    torch.testing.assert_close(from_states, expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(from_codes, from_states)
    # the codes are GeRe's zones: LOW/HIGH where GeRe has exactly one label, BETWEEN elsewhere
    only_low = scope["label_neg"] & ~scope["label_pos"]
    only_high = scope["label_pos"] & ~scope["label_neg"]
    assert torch.equal(codes == zones.LOW, only_low) and torch.equal(codes == zones.HIGH, only_high)


def test_half_precision_thresholds_are_not_rounded_to_the_model_dtype() -> None:
    """A frozen bf16 value just inside float32 `pos` stays BETWEEN (rounding pos to bf16 would make it HIGH)."""
    neg, pos = torch.tensor([-1.0]), torch.tensor([1.0009])  # bf16(1.0009) == 1.0
    frozen = torch.tensor([[[1.0]]], dtype=torch.bfloat16)
    assert zones.zone_codes(frozen, neg, pos).item() == zones.BETWEEN
    hidden = torch.tensor([[[1.0]]], dtype=torch.bfloat16)
    expected, _ = gere_margin({"mean": torch.tensor([0.00045]), "std": torch.tensor([1.00045])}, frozen, hidden, torch.ones(1, 1, dtype=torch.long))
    assert tm_margin_loss(hidden, neg, pos, frozen=frozen).item() == expected.item() == 0.0


def test_zero_std_dimension_counts_once_with_gere_value() -> None:
    """std 0: GeRe labels the frozen value both low and high; ours is BETWEEN, with the same penalty |h − t|."""
    frozen = torch.full((1, 3, 1), 0.75)
    hidden = torch.tensor([[[0.75], [1.0], [0.25]]])
    mask = torch.ones(1, 3, dtype=torch.long)
    stats = {"mean": torch.tensor([0.75]), "std": torch.tensor([0.0])}
    expected, scope = gere_margin(stats, frozen, hidden, mask)
    assert bool((scope["label_neg"] & scope["label_pos"]).all())
    codes = zones.zone_codes(frozen, scope["neg_thr"], scope["pos_thr"])
    assert (codes == zones.BETWEEN).all()
    ours = tm_margin_loss(hidden, scope["neg_thr"], scope["pos_thr"], zones=codes, mask=mask)
    assert ours.item() == expected.item() == pytest.approx(0.375)  # (0.25 + 0.5) / 2 violating elements
