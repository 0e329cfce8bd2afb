"""`transformers.Trainer` with a DeepSpeed single-cluster sequence-length curriculum.

The batches of each optimizer step are cut by a `SeqlenCurriculum` at `state.global_step` (0 for
the first global batch, DeepSpeed's step 1), before the Trainer counts the tokens that scale the
loss, so truncated or reshaped batches are averaged over the tokens the model actually sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from replaystore.curriculum.seqlen import SeqlenCurriculum
from replaystore.errors import ValidationError
from replaystore.extras import require

require("transformers", extra="gere", feature="the sequence-length curriculum Trainer")
from transformers import Trainer  # noqa: E402 - after the check that names the extra


class SeqlenCurriculumTrainer(Trainer):
    """A Trainer whose training batches are truncated / reshaped to the curriculum's current length."""

    def __init__(self, *args: Any, seqlen_curriculum: SeqlenCurriculum, **kwargs: Any) -> None:
        if not isinstance(seqlen_curriculum, SeqlenCurriculum):
            raise ValidationError("seqlen_curriculum", f"must be a SeqlenCurriculum, got {type(seqlen_curriculum).__name__}")
        super().__init__(*args, **kwargs)
        self.seqlen_curriculum = seqlen_curriculum

    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The micro-batches of the next optimizer step, cut to the length of that step."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        batches = [self.seqlen_curriculum(batch, self.state.global_step) for batch in batches]
        return batches, self._get_num_items_in_batch(batches, device)
