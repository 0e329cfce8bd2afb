"""Turning agent trajectories into candidate experiences, and validating them (ReMe's summariser).

Trajectories of one task are split ReMe's way: success (score ≥ `success_threshold`), failure
(below it) and, when a task has trajectories of different scores, a comparative pair (best vs
worst). An extractor writes a lesson for each and a validation score; `distill` keeps those
scoring at least 0.5. Two extractors: `RuleExtractor` needs no model (deterministic, for tests,
CI and bootstrapping), `LLMExtractor` prompts a transformers text-generation pipeline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from replaystore.checks import is_finite_number
from replaystore.errors import ValidationError
from replaystore.extras import require

SUCCESS_THRESHOLD = 1.0
MAX_STEP_CHARS = 300
MAX_STEPS = 8


@dataclass(frozen=True)
class Trajectory:
    """One attempt at a task: its messages (`role`, `content`, optional `name`), and its score."""

    task_id: str
    messages: tuple[Mapping[str, Any], ...]
    score: float
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def query(self) -> str:
        """The task as the user put it: metadata `query`, else the first user message."""
        if self.metadata.get("query"):
            return str(self.metadata["query"])
        return next((str(m.get("content", "")) for m in self.messages if m.get("role") == "user"), "")

    @property
    def steps(self) -> list[str]:
        """What the agent did: its own messages and the tools' answers, in order."""
        return [_clip(str(m.get("content", ""))) for m in self.messages if m.get("role") in ("assistant", "tool")]

    @property
    def tools(self) -> list[str]:
        return sorted({str(m["name"]) for m in self.messages if m.get("role") == "tool" and m.get("name")})


def as_trajectory(value: Trajectory | Mapping[str, Any], index: int = 0) -> Trajectory:
    """Accept ReMe's trajectory dicts (`task_id`, `messages`, `score`, `metadata`) or `Trajectory`."""
    if isinstance(value, Trajectory):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError("trajectories", f"item {index} must be a mapping or Trajectory, got {type(value).__name__}")
    messages = value.get("messages")
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, Mapping) for m in messages):
        raise ValidationError("messages", f"trajectory {index} needs a list of {{role, content}} messages")
    score = value.get("score", 0.0)
    if not is_finite_number(score):
        raise ValidationError("score", f"trajectory {index} score must be a finite number, got {score!r}")
    metadata = value.get("metadata") or {}
    task_id = value.get("task_id", metadata.get("task_id", f"task-{index}"))
    return Trajectory(str(task_id), tuple(messages), float(score), dict(metadata))


@dataclass(frozen=True)
class Group:
    """What one lesson is extracted from: `kind` and the trajectories behind it (best first)."""

    kind: str
    trajectories: tuple[Trajectory, ...]


def group(trajectories: Iterable[Trajectory], success_threshold: float = SUCCESS_THRESHOLD) -> list[Group]:
    """Success and failure groups per trajectory, and a best-vs-worst comparative per task."""
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        by_task.setdefault(t.task_id, []).append(t)
    out: list[Group] = []
    for items in by_task.values():
        out += [Group("success" if t.score >= success_threshold else "failure", (t,)) for t in items]
        ranked = sorted(items, key=lambda t: t.score, reverse=True)
        if len(ranked) > 1 and ranked[0].score > ranked[-1].score:
            out.append(Group("comparative", (ranked[0], ranked[-1])))
    return out


class Extractor(Protocol):
    """Writes candidate experiences for groups of trajectories and scores them."""

    author: str

    def extract(self, groups: Sequence[Group]) -> list[dict[str, Any]]:
        """Candidate rows with at least kind, when_to_use, content; optionally tags, confidence, metadata."""
        ...

    def validate(self, candidates: Sequence[Mapping[str, Any]]) -> list[float]:
        """A score in [0, 1] per candidate; `distill` keeps those ≥ its `min_score`."""
        ...


def _clip(text: str, limit: int = MAX_STEP_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _numbered(steps: Sequence[str]) -> str:
    return " ".join(f"{i}) {s}" for i, s in enumerate(steps[:MAX_STEPS], 1))


def _sources(g: Group) -> list[str]:
    return [t.task_id for t in g.trajectories]


class RuleExtractor:
    """Deterministic lessons from the trajectory text itself; no model needed.

    Success: the steps that worked. Failure: the steps to avoid, ending at the last one, keyed
    by the step that started it. Comparative: prefer the best attempt's steps over the worst's.
    Validation scores 0 when the agent took no step, else the share of checks passed: a scenario,
    at least `min_words` words of lesson, a lesson that is not just the scenario again.
    """

    author = "rule-extractor"

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words

    def extract(self, groups: Sequence[Group]) -> list[dict[str, Any]]:
        out = []
        for g in groups:
            best = g.trajectories[0]
            task = _clip(best.query, 200)
            first = best.steps[0] if best.steps else ""
            if g.kind == "success":
                scenario = f"When the task is: {task}"
                content, confidence = f"Steps that worked: {_numbered(best.steps)}", min(1.0, max(0.0, best.score))
            elif g.kind == "failure":
                scenario = f"Before starting with '{first}' on: {task}"
                last = best.steps[-1] if best.steps else ""
                content = f"Avoid this approach (score {best.score:g}): {_numbered(best.steps)}. It went wrong at: {last}"
                confidence = 1.0 - min(1.0, max(0.0, best.score))
            else:
                worst = g.trajectories[1]
                scenario = f"When choosing between approaches to: {task}"
                content = f"Prefer: {_numbered(best.steps)}. Over: {_numbered(worst.steps)}"
                confidence = min(1.0, max(0.0, best.score - worst.score))
            tools = sorted({tool for t in g.trajectories for tool in t.tools})
            out.append(
                {
                    "kind": g.kind,
                    "when_to_use": scenario,
                    "content": content,
                    "tags": [g.kind, *tools],
                    "confidence": confidence,
                    "source_ids": _sources(g),
                    "metadata": {"tools_used": tools, "step_count": sum(len(t.steps) for t in g.trajectories)},
                }
            )
        return out

    def validate(self, candidates: Sequence[Mapping[str, Any]]) -> list[float]:
        scores = []
        for c in candidates:
            scenario, content = str(c.get("when_to_use", "")).strip(), str(c.get("content", "")).strip()
            if int((c.get("metadata") or {}).get("step_count", 1)) == 0:
                scores.append(0.0)  # no agent step: nothing was learnt
                continue
            checks = [bool(scenario), len(content.split()) >= self.min_words, content.lower() != scenario.lower()]
            scores.append(sum(checks) / len(checks))
        return scores


PROMPTS = {
    "success": (
        "You analyse an agent's successful attempt at a task and write reusable lessons.\n"
        "Task: {query}\nSteps:\n{steps}\nOutcome: success (score {score})\n"
        "Write the step patterns that made it succeed as a JSON list of objects with keys "
        '"when_to_use" (the situation), "experience" (what to do), "tags", "confidence" (0-1).\n```json\n'
    ),
    "failure": (
        "You analyse an agent's failed attempt at a task and write lessons that prevent the failure.\n"
        "Task: {query}\nSteps:\n{steps}\nOutcome: failure (score {score})\n"
        "Write what triggered the failure and how to avoid it as a JSON list of objects with keys "
        '"when_to_use" (the situation), "experience" (what to avoid and do instead), "tags", "confidence" (0-1).\n```json\n'
    ),
    "comparative": (
        "You compare a better and a worse attempt at the same task and write what made the difference.\n"
        "Task: {query}\nBetter attempt (score {score}):\n{steps}\nWorse attempt (score {other_score}):\n{other_steps}\n"
        "Write the decisive differences as a JSON list of objects with keys "
        '"when_to_use" (the situation), "experience" (what to prefer), "tags", "confidence" (0-1).\n```json\n'
    ),
    "validation": (
        "Judge whether this lesson is specific, actionable and reusable for other tasks.\n"
        "When to use: {when_to_use}\nLesson: {content}\n"
        'Answer as JSON: {{"is_valid": true or false, "score": 0-1, "reason": "..."}}\n```json\n'
    ),
}


def prompt_for(g: Group) -> str:
    """The ReMe-style prompt for a group (success, failure or comparative)."""
    best = g.trajectories[0]
    values = {"query": best.query, "steps": "\n".join(best.steps[:MAX_STEPS]), "score": f"{best.score:g}"}
    if g.kind == "comparative":
        worst = g.trajectories[1]
        values |= {"other_steps": "\n".join(worst.steps[:MAX_STEPS]), "other_score": f"{worst.score:g}"}
    return PROMPTS[g.kind].format(**values)


def _json_values(text: str) -> list[Any]:
    """Every JSON value the model wrote: fenced blocks first, then bare arrays/objects."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    for block in re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.S) or [text]:
        i = 0
        while (match := re.search(r"[\[{]", block[i:])) is not None:
            start = i + match.start()
            try:
                value, end = decoder.raw_decode(block, start)
            except json.JSONDecodeError:
                i = start + 1
                continue
            found.append(value)
            i = end
    return found


LESSON_KEYS = ("when_to_use", "condition", "experience", "content", "tags", "confidence")


def parse_experiences(text: str) -> list[dict[str, Any]]:
    """Lessons from model output: objects with `when_to_use` (or `condition`) and `experience`/`content`."""
    items: list[Any] = []
    for value in _json_values(text):
        items += value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        scenario = str(item.get("when_to_use") or item.get("condition") or "").strip()
        content = str(item.get("experience") or item.get("content") or "").strip()
        if not content:
            continue
        confidence = item.get("confidence")
        out.append(
            {
                "when_to_use": scenario,
                "content": content,
                "tags": [str(t) for t in item.get("tags", [])] if isinstance(item.get("tags"), list) else [],
                "confidence": min(1.0, max(0.0, float(confidence))) if is_finite_number(confidence) else None,
                "metadata": {k: v for k, v in item.items() if k not in LESSON_KEYS},
            }
        )
    return out


def parse_validation(text: str) -> float:
    """ReMe's rule: the lesson's score if the judge says `is_valid`, else 0 (unparseable: 0)."""
    for value in _json_values(text):
        if isinstance(value, Mapping) and "is_valid" in value:
            score = value.get("score")
            return float(score) if value["is_valid"] is True and is_finite_number(score) else 0.0
    return 0.0


Generate = Callable[[str], str]


def pipeline_generator(model: str | Any, max_new_tokens: int = 256) -> Generate:
    """A `prompt -> continuation` function over a transformers text-generation pipeline.

    `model` is a local model path or an already-built pipeline; decoding is greedy so the same
    trajectories give the same lessons.
    """
    require("transformers", extra="gere", feature="the LLM experience extractor")
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model) if isinstance(model, str) else model

    def generate(prompt: str) -> str:
        result = pipe(prompt, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
        return str(result[0]["generated_text"])

    return generate


class LLMExtractor:
    """ReMe's summariser over a local text-generation model: one prompt per group, one to validate."""

    def __init__(self, model: str | Any, max_new_tokens: int = 256, author: str | None = None) -> None:
        self.generate = pipeline_generator(model, max_new_tokens)
        name = model if isinstance(model, str) else getattr(getattr(model, "model", None), "name_or_path", "")
        self.author = author or str(name) or "llm-extractor"

    def extract(self, groups: Sequence[Group]) -> list[dict[str, Any]]:
        out = []
        for g in groups:
            for item in parse_experiences(self.generate(prompt_for(g))):
                out.append({**item, "kind": g.kind, "source_ids": _sources(g), "tags": [g.kind, *item["tags"]]})
        return out

    def validate(self, candidates: Sequence[Mapping[str, Any]]) -> list[float]:
        return [parse_validation(self.generate(PROMPTS["validation"].format(when_to_use=c["when_to_use"], content=c["content"]))) for c in candidates]
