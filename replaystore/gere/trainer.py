"""`transformers.Trainer` with GeRe replay: task batches plus replay samples from the store.

Each training micro-batch's loss becomes GeRe's `(task CE + replay CE) / 2 + w · margin` when
replay samples go with it. `ReplaySchedule` decides how many: exactly k per *global* batch
(spread over gradient-accumulation micro-batches and ranks so the total is k), or a mixing
proportion of all samples seen (carried across steps, so the long-run share is exact).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from replaystore.errors import ValidationError
from replaystore.extras import require

require("transformers", extra="gere", feature="the GeRe trainer")
from transformers import Trainer  # noqa: E402 - after the check that names the extra

from replaystore.gere.losses import DEFAULT_WEIGHTING, DynamicWeight, FixedWeight, combine_losses  # noqa: E402
from replaystore.gere.replay import ReplaySet, replay_losses  # noqa: E402


class ReplaySchedule:
    """How many replay samples go with one micro-batch: exactly `k` per global batch, or a `proportion`."""

    def __init__(self, k: int | None = None, proportion: float | None = None) -> None:
        if (k is None) == (proportion is None):
            raise ValidationError("k/proportion", "give exactly one of k (replay samples per global batch) or proportion")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValidationError("k", f"must be a positive integer, got {k!r}")
        if proportion is not None and not (isinstance(proportion, (int, float)) and 0 < proportion < 1):
            raise ValidationError("proportion", f"must be strictly between 0 and 1, got {proportion!r}")
        self.k, self.proportion = k, proportion
        self._carry = 0.0

    def count(self, task_batch: int, micro_step: int = 0, accumulation: int = 1, rank: int = 0, world_size: int = 1) -> int:
        """Replay samples for this micro-batch of `task_batch` task samples."""
        if self.k is not None:
            slots = accumulation * world_size
            slot = micro_step * world_size + rank
            return self.k // slots + int(slot < self.k % slots)
        assert self.proportion is not None
        self._carry += task_batch * self.proportion / (1 - self.proportion)
        n = math.floor(self._carry + 1e-9)
        self._carry -= n
        return n


class GeReTrainer(Trainer):
    """A Trainer that adds replay CE and the TM margin on general samples to the task loss."""

    def __init__(
        self,
        *args: Any,
        replay: ReplaySet,
        schedule: ReplaySchedule,
        weighting: FixedWeight | DynamicWeight = DEFAULT_WEIGHTING,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.replay, self.schedule, self.weighting = replay, schedule, weighting
        self.model_accepts_loss_kwargs = False  # our loss is a per-micro-batch mean: let Trainer scale it
        self.replay_log: list[dict[str, float]] = []
        self._step_seen, self._micro = -1, 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        n = self._replay_count(len(inputs["input_ids"])) if model.training else 0
        if n:
            batch = self.replay.next(n).to(loss.device)
            parts = replay_losses(model, batch)
            task_ce = loss
            loss = combine_losses(task_ce, parts.ce, parts.margin, self.weighting)
            self.replay_log.append(
                {"step": self.state.global_step, "replayed": n, "task_ce": task_ce.item(), "replay_ce": parts.ce.item(), "margin": parts.margin.item()}
            )
        return (loss, outputs) if return_outputs else loss

    def _replay_count(self, task_batch: int) -> int:
        """Position of this micro-batch inside its global batch, then the schedule's count."""
        if self.state.global_step != self._step_seen:
            self._step_seen, self._micro = self.state.global_step, 0
        micro, self._micro = self._micro, self._micro + 1
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return self.schedule.count(task_batch, micro, accumulation, self.args.process_index, self.args.world_size)
