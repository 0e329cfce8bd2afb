"""Replay losses as plain torch functions, usable in any training loop.

The TM (threshold margin) loss keeps each activation in the zone its frozen value was in, relative
to per-dimension thresholds `neg < pos`; it takes either the frozen float states or their 2-bit
zone codes and gives the same value from both. Masks are `[batch, tokens]` (1 = real token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from replaystore.errors import ValidationError
from replaystore.gere import zones as zone_codes

EPS = 1e-8


def _token_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A float `[batch, tokens, 1]` mask (all ones when none is given)."""
    if mask is None:
        return torch.ones(*like.shape[:-1], 1, dtype=like.dtype, device=like.device)
    return mask.to(like.device, like.dtype).unsqueeze(-1)


def tm_margin_loss(
    hidden: torch.Tensor,
    neg: torch.Tensor,
    pos: torch.Tensor,
    *,
    frozen: torch.Tensor | None = None,
    zones: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """GeRe's threshold margin loss, the mean over violating (non-zero) masked elements.

    frozen ≤ neg → relu(h − neg); frozen ≥ pos → relu(pos − h); between → relu(h − pos) + relu(neg − h).
    Pass exactly one of `frozen` (float states) or `zones` (codes from `zones.zone_codes`).
    Thresholds keep their own dtype and torch promotion decides the arithmetic, as in GeRe: a
    bfloat16 or float16 model against float32 thresholds gives a float32 loss.
    """
    neg = neg.to(hidden.device)
    pos = pos.to(hidden.device)
    if frozen is not None and zones is None:
        codes = zone_codes.zone_codes(frozen.to(hidden.device), neg, pos)
    elif zones is not None and frozen is None:
        codes = zones
    else:
        raise ValidationError("frozen/zones", "pass exactly one of the frozen states or their zone codes")
    if codes.shape != hidden.shape:
        raise ValidationError("hidden", f"shape {tuple(hidden.shape)} does not match the frozen states {tuple(codes.shape)}")
    codes = codes.to(hidden.device)
    below = F.relu(hidden - neg)
    above = F.relu(pos - hidden)
    between = F.relu(hidden - pos) + F.relu(neg - hidden)
    loss = torch.where(codes == zone_codes.LOW, below, torch.where(codes == zone_codes.HIGH, above, between))
    loss = loss * _token_mask(mask, loss)
    return loss.sum() / ((loss != 0).sum() + EPS)


def l1_feature_loss(hidden: torch.Tensor, frozen: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference to the frozen states over real tokens."""
    weights = _token_mask(mask, hidden)
    return ((hidden - frozen.to(hidden)).abs() * weights).sum() / (weights.sum() * hidden.shape[-1] + EPS)


def l2_feature_loss(hidden: torch.Tensor, frozen: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference to the frozen states over real tokens."""
    weights = _token_mask(mask, hidden)
    return ((hidden - frozen.to(hidden)).square() * weights).sum() / (weights.sum() * hidden.shape[-1] + EPS)


def kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher ‖ student) of temperature-softened distributions, × T², mean over real tokens.

    With `indices` ([batch, tokens, k], from stored top-k logits) `teacher_logits` are the top-k
    values and both distributions are taken over those k entries only.
    """
    if not temperature > 0:
        raise ValidationError("temperature", f"must be > 0, got {temperature!r}")
    if indices is not None:
        student_logits = student_logits.gather(-1, indices.to(student_logits.device, torch.long))
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.to(student_logits) / temperature, dim=-1)
    per_token = (teacher.exp() * (teacher - student)).sum(-1, keepdim=True)
    weights = _token_mask(mask, student_logits)
    return (per_token * weights).sum() / (weights.sum() + EPS) * temperature**2


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plain label fitting on replay text: next-token cross-entropy, padding ignored."""
    labels = input_ids.to(logits.device, torch.long).clone()
    if mask is not None:
        labels[mask.to(labels.device) == 0] = -100
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)


@dataclass(frozen=True)
class FixedWeight:
    """Margin term × a constant (GeRe's w = 1 or 100)."""

    weight: float = 1.0

    def __call__(self, ce: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.weight, dtype=margin.dtype, device=margin.device)


@dataclass(frozen=True)
class DynamicWeight:
    """w = CE / margin (no gradient through w), so the margin term is as large as the CE term."""

    def __call__(self, ce: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        if margin.detach() == 0:
            return torch.zeros((), dtype=margin.dtype, device=margin.device)
        return (ce / margin).detach()


DEFAULT_WEIGHTING = DynamicWeight()


def combine_losses(
    task_ce: torch.Tensor,
    replay_ce: torch.Tensor,
    margin: torch.Tensor,
    weighting: FixedWeight | DynamicWeight = DEFAULT_WEIGHTING,
) -> torch.Tensor:
    """GeRe's total: (replay CE + task CE) / 2 + w · margin."""
    ce = (replay_ce + task_ce) / 2
    return ce + weighting(ce, margin) * margin
