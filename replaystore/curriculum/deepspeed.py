"""Import DeepSpeed's data-efficiency curriculum config as ordering definitions.

Reads `data_efficiency.data_sampling.curriculum_learning` (the whole DeepSpeed config, that
section, or its `curriculum_metrics`) and returns one easy-to-hard `OrderingDefinition` per metric
whose pacing admits exactly what DeepSpeed's scheduler would at every step: fixed_linear and
fixed_root (with their `difficulty_step` rounding and the `max_difficulty` cap) become the
equivalent discrete schedule; percentile difficulties (1–100) become fractions, value difficulties
stay metric values and are turned into percentiles from the stored scores when the ordering is built.
The original metric config is kept in the definition's `imported_from`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from replaystore.checks import is_finite_number
from replaystore.curriculum.orderings import OrderingDefinition
from replaystore.curriculum.pacing import DiscretePacing
from replaystore.curriculum.scoring import validate_metric
from replaystore.errors import ValidationError

SCHEDULES = ("fixed_linear", "fixed_root", "fixed_discrete")


def _metrics_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Find `curriculum_metrics` in a whole DeepSpeed config, its curriculum section, or the metrics alone."""
    section: Any = config
    for key in ("data_efficiency", "data_sampling", "curriculum_learning"):
        if isinstance(section, Mapping) and key in section:
            section = section[key]
    if isinstance(section, Mapping) and section.get("enabled") is False:
        raise ValidationError("curriculum_learning.enabled", "is false in this config; nothing to import")
    if isinstance(section, Mapping) and "curriculum_metrics" in section:
        section = section["curriculum_metrics"]
    elif section is config and isinstance(section, Mapping) and not all(isinstance(v, Mapping) for v in section.values()):
        section = None  # a whole config without a curriculum section, not a mapping of metric configs
    if not isinstance(section, Mapping) or not section:
        raise ValidationError(
            "curriculum_metrics",
            "no curriculum metrics found in the DeepSpeed config: expected "
            "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics (or that section, or the metrics alone)",
        )
    return section


def _number(cfg: Mapping[str, Any], key: str, where: str) -> float:
    value = cfg.get(key)
    if not is_finite_number(value):
        raise ValidationError(f"{where}.{key}", f"must be a finite number, got {value!r}")
    return float(cast(float, value))


def _root_schedule(cfg: Mapping[str, Any], where: str, root: float) -> tuple[list[float], list[int]]:
    """DeepSpeed's fixed_root difficulty at every step up to the total, as change points."""
    sc = cfg.get("schedule_config") or {}
    total = sc.get("total_curriculum_step", sc.get("total_step"))
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        raise ValidationError(f"{where}.schedule_config.total_curriculum_step", f"must be a positive integer, got {total!r}")
    step = _number(sc, "difficulty_step", f"{where}.schedule_config") if "difficulty_step" in sc else 1.0
    if step <= 0:
        raise ValidationError(f"{where}.schedule_config.difficulty_step", f"must be > 0, got {step!r}")
    low, high = _number(cfg, "min_difficulty", where), _number(cfg, "max_difficulty", where)
    if high < low:
        raise ValidationError(f"{where}.max_difficulty", f"must be ≥ min_difficulty ({low:g}), got {high:g}")
    # Past `total` the rounded difficulty can still climb to the cap when it is not a multiple of the step.
    top = math.ceil(high / step) * step
    last = total if high == low else math.ceil(total * ((top - low) / (high - low)) ** root) + 1
    steps = np.arange(max(total, last) + 1, dtype=np.float64)
    d = np.floor((steps / total) ** (1.0 / root) * (high - low) + low)
    d = np.minimum(d - np.mod(d, step), high)
    change = np.flatnonzero(np.diff(d)) + 1  # first step of each new difficulty
    return [float(x) for x in d[np.r_[0, change]]], [int(s) - 1 for s in change]


def _discrete_schedule(cfg: Mapping[str, Any], where: str) -> tuple[list[float], list[int]]:
    sc = cfg.get("schedule_config") or {}
    if not isinstance(sc.get("difficulty"), list) or not isinstance(sc.get("max_step"), list):
        raise ValidationError(f"{where}.schedule_config", "fixed_discrete needs lists 'difficulty' and 'max_step'")
    return sc["difficulty"], sc["max_step"]


def definition_from_deepspeed_metric(metric: str, cfg: Mapping[str, Any], seed: int = 0) -> OrderingDefinition:
    """One DeepSpeed curriculum metric config → an easy-to-hard ordering definition."""
    validate_metric(metric)
    where = f"curriculum_metrics.{metric}"
    if not isinstance(cfg, Mapping):
        raise ValidationError(where, f"must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("difficulty_type", "value")
    if kind not in ("value", "percentile"):
        raise ValidationError(f"{where}.difficulty_type", f"must be 'value' or 'percentile', got {kind!r}")
    schedule = cfg.get("schedule_type")
    if schedule == "fixed_discrete":
        difficulties, steps = _discrete_schedule(cfg, where)
    elif schedule in ("fixed_linear", "fixed_root"):
        root = 1.0 if schedule == "fixed_linear" else _number(cfg.get("schedule_config") or {}, "root_degree", f"{where}.schedule_config")
        if root <= 0 or not math.isfinite(root):
            raise ValidationError(f"{where}.schedule_config.root_degree", f"must be > 0, got {root!r}")
        difficulties, steps = _root_schedule(cfg, where, root)
    else:
        raise ValidationError(f"{where}.schedule_type", f"must be one of {list(SCHEDULES)}, got {schedule!r}")
    provenance = {"deepspeed": {metric: dict(cfg)}}
    if kind == "percentile":
        if not all(is_finite_number(d) for d in difficulties):
            raise ValidationError(f"{where}.difficulty", f"percentile difficulties must be numbers, got {difficulties}")
        pacing = DiscretePacing(tuple(d / 100.0 for d in difficulties), tuple(steps))
        return OrderingDefinition("easy_to_hard", metric, pacing, seed, imported_from=provenance)
    return OrderingDefinition(
        "easy_to_hard", metric, None, seed, difficulty_type="value", value_schedule=(tuple(difficulties), tuple(steps)), imported_from=provenance
    )


def from_deepspeed(config: Mapping[str, Any] | str | Path, seed: int = 0) -> dict[str, OrderingDefinition]:
    """A DeepSpeed config (mapping, JSON text or path to a JSON file) → {metric: definition}."""
    if isinstance(config, Path) or (isinstance(config, str) and not config.lstrip().startswith("{")):
        config = Path(config).read_text()
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ValidationError("config", f"is not valid JSON: {exc}") from None
    if not isinstance(config, Mapping):
        raise ValidationError("config", f"must be a mapping, got {type(config).__name__}")
    return {metric: definition_from_deepspeed_metric(metric, cfg, seed) for metric, cfg in _metrics_section(config).items()}
