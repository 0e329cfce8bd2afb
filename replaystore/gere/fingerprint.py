"""Which model produced a set of states: a hash of its config and every weight.

Stored states are only meaningful for the exact network that made them, so reads ask for a
fingerprint and a different model is an error rather than silently mismatched targets.
"""

from __future__ import annotations

import hashlib
import json
import re

import torch

from replaystore.errors import ValidationError

_FORMAT = re.compile(r"^[0-9a-f]{32}$")
# Run-time switches and bookkeeping that do not change what the network computes.
_IGNORED = {"transformers_version", "architectures", "output_hidden_states", "output_attentions", "return_dict", "use_cache", "name_or_path"}


class ModelMismatchError(ValidationError):
    """States or statistics were asked for with a model other than the one that made them."""


def check_fingerprint(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not _FORMAT.fullmatch(fingerprint):
        raise ValidationError("model_fingerprint", f"must be 32 lowercase hex digits, got {fingerprint!r}")
    return fingerprint


def _config_json(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    settings = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    kept = {k: v for k, v in settings.items() if k not in _IGNORED and not k.startswith("_")}
    return json.dumps({"class": type(model).__name__, "config": kept}, sort_keys=True, default=str)


def model_fingerprint(model: torch.nn.Module) -> str:
    """32 hex digits of sha256 over the model's config and every tensor of its state dict."""
    digest = hashlib.sha256(_config_json(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:32]
