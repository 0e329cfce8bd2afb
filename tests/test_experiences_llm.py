"""The LLM extractor: ReMe prompts, parsing model output, and a real (tiny) transformers pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

import replaystore
from replaystore.errors import ValidationError
from replaystore.experiences import LLMExtractor
from replaystore.experiences.embedder import minilm_path
from replaystore.experiences.extractors import Group, Trajectory, as_trajectory, group, parse_experiences, parse_validation, prompt_for

WIN = Trajectory(
    "t1", ({"role": "user", "content": "Rename all .txt files to .md"}, {"role": "assistant", "content": "List files, then rename each with pathlib"}), 1.0
)
LOSS = Trajectory(
    "t1", ({"role": "user", "content": "Rename all .txt files to .md"}, {"role": "assistant", "content": "Use a shell glob that misses hidden files"}), 0.0
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 with MiniLM's tokenizer, saved like any local model folder."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=2,
        n_positions=1024,
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_prompts_carry_the_trajectory_and_outcome() -> None:
    success, failure, comparative = (prompt_for(g) for g in sorted(group([WIN, LOSS]), key=lambda g: ["success", "failure", "comparative"].index(g.kind)))
    assert "Rename all .txt files to .md" in success and "rename each with pathlib" in success and "success" in success
    assert "hidden files" in failure and "failure" in failure
    assert "Better attempt (score 1)" in comparative and "Worse attempt (score 0)" in comparative
    assert "pathlib" in comparative and "hidden files" in comparative


def test_parse_reme_style_output() -> None:
    text = """Here are the lessons.
```json
[{"when_to_use": "When renaming many files", "experience": "List first, then rename with pathlib", "tags": ["files"], "confidence": 1.7, "step_type": "action"},
 {"condition": "When globbing", "experience": "Remember hidden files"},
 {"when_to_use": "no lesson here"}]
```"""
    items = parse_experiences(text)
    assert [i["when_to_use"] for i in items] == ["When renaming many files", "When globbing"]
    assert items[0]["confidence"] == 1.0 and items[0]["tags"] == ["files"] and items[0]["metadata"] == {"step_type": "action"}
    assert parse_experiences("[{'not': json}] and {broken") == []
    assert parse_experiences('bare {"when_to_use": "w", "content": "c"} object')[0]["content"] == "c"


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('```json\n{"is_valid": true, "score": 0.8, "reason": "ok"}\n```', 0.8),
        ('{"is_valid": false, "score": 0.9}', 0.0),
        ("no json", 0.0),
        ('{"is_valid": true}', 0.0),
    ],
)
def test_parse_validation_follows_reme(text: str, score: float) -> None:
    assert parse_validation(text) == score


def test_llm_extractor_runs_a_local_text_generation_model(tiny_model_dir: Path, store: replaystore.Store) -> None:
    extractor = LLMExtractor(str(tiny_model_dir), max_new_tokens=12)
    out = extractor.generate(prompt_for(Group("success", (WIN,))))
    assert isinstance(out, str) and out == extractor.generate(prompt_for(Group("success", (WIN,))))  # greedy: deterministic
    assert extractor.author == str(tiny_model_dir)
    # An untrained model writes no parseable lesson: nothing is invented, nothing is stored.
    report = store.experiences().distill([WIN, LOSS], extractor=extractor)
    assert report.candidates == 0 and report.added == [] and store.count("experiences") == 0


@pytest.mark.parametrize(
    ("value", "field"),
    [({"messages": "hi"}, "messages"), ({"messages": [], "score": float("inf")}, "score"), (["not", "a", "dict"], "trajectories")],
)
def test_bad_trajectories_are_refused(value: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        as_trajectory(value)  # type: ignore[arg-type]
    assert err.value.field == field
