"""GeRe general samples replay: texts, frozen activation states, float64 statistics, replay losses.

`ingest` stores general texts once (by content hash), `distill` records a frozen model's hidden
states and statistics (resumable, tied to the model's fingerprint), `ReplaySet` hands them back
as tensors, and the loss functions / `GeReTrainer` put them into training.
"""

from replaystore.gere.codec import PRECISIONS
from replaystore.gere.distill import distill
from replaystore.gere.fingerprint import ModelMismatchError, model_fingerprint
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
from replaystore.gere.replay import ReplayBatch, ReplayLosses, ReplaySet, load_replay_batch, replay_losses
from replaystore.gere.samples import content_hash, ingest, read_samples, retokenize, token_limit
from replaystore.gere.stats import RunningStats, load_stats

__all__ = [
    "PRECISIONS",
    "DynamicWeight",
    "FixedWeight",
    "ModelMismatchError",
    "ReplayBatch",
    "ReplayLosses",
    "ReplaySet",
    "RunningStats",
    "causal_lm_loss",
    "combine_losses",
    "content_hash",
    "distill",
    "ingest",
    "kl_loss",
    "l1_feature_loss",
    "l2_feature_loss",
    "load_replay_batch",
    "load_stats",
    "model_fingerprint",
    "read_samples",
    "replay_losses",
    "retokenize",
    "tm_margin_loss",
    "token_limit",
]
