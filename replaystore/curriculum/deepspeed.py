"""Import DeepSpeed's curriculum configs: schedule-based metrics as orderings, single-cluster ones as sequence-length schedules.

Reads `data_efficiency.data_sampling.curriculum_learning` (the whole DeepSpeed config, that
section, or its `curriculum_metrics`) and the legacy top-level `curriculum_learning` section
(`curriculum_type: seqlen`, DeepSpeed's tutorial). What each metric becomes follows DeepSpeed:

- `clustering_type: schedule_based` (the default) → an easy-to-hard `OrderingDefinition` whose
  pacing admits what DeepSpeed's sampler would: fixed_linear / fixed_root (with `difficulty_step`
  rounding and the `max_difficulty` cap) and fixed_discrete become the equivalent discrete
  schedule. Percentile difficulties are fractions of `max_difficulty` (DeepSpeed admits
  `(N // max_difficulty) · d` samples; replaystore the samples with percentile ≤ d / max_difficulty:
  the same when `max_difficulty` divides N). A percentile rounded down to 0 (min_difficulty <
  difficulty_step) admits no sample in DeepSpeed; replaystore's sampler then admits the minimum,
  the easiest tie group. Value difficulties stay metric values, turned into percentiles from the
  stored scores when the ordering is built.
- `clustering_type: single_cluster` → a `SeqlenCurriculum`: every row is admitted, and the
  metrics named `seqlen_truncate` / `seqlen_reshape` cut the token columns of each batch to the
  current difficulty, as Megatron-DeepSpeed does; other single-cluster metrics change nothing.
  The legacy `curriculum_learning` section (seqlen) is a truncating `SeqlenCurriculum`.

Steps: replaystore counts global batches from 0; DeepSpeed's sampler (and its legacy engine path)
asks the scheduler for step 1 at the first global batch. Imported schedules are shifted so that
replaystore step t has DeepSpeed's difficulty at step t + 1: the n-th batch sees the same
difficulty in both. The original metric config is kept in `imported_from`.
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
from replaystore.curriculum.seqlen import SeqlenCurriculum
from replaystore.errors import ValidationError

SCHEDULES = ("fixed_linear", "fixed_root", "fixed_discrete")
CLUSTERING = ("schedule_based", "single_cluster")
SEQLEN_MODES = {"seqlen_truncate": "truncate", "seqlen_reshape": "reshape"}
Imported = OrderingDefinition | SeqlenCurriculum


def _enabled(section: Mapping[str, Any], where: str) -> None:
    if section.get("enabled") is False:
        raise ValidationError(f"{where}.enabled", "is false in this config; nothing to import")


def _sections(config: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(`curriculum_metrics`, legacy `curriculum_learning` section) of a config; either may be None."""
    legacy = config.get("curriculum_learning")
    if isinstance(legacy, Mapping) and "curriculum_type" in legacy:
        _enabled(legacy, "curriculum_learning")
        sampling = (config.get("data_efficiency") or {}).get("data_sampling") or {}
        has_metrics = isinstance(sampling, Mapping) and isinstance(sampling.get("curriculum_learning"), Mapping)
        return (_metrics_section(config["data_efficiency"]) if has_metrics else None), legacy
    if "curriculum_type" in config:  # the legacy section on its own
        _enabled(config, "curriculum_learning")
        return None, config
    return _metrics_section(config), None


def _metrics_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Find `curriculum_metrics` in a whole DeepSpeed config, its curriculum section, or the metrics alone."""
    section: Any = config
    for key in ("data_efficiency", "data_sampling", "curriculum_learning"):
        if isinstance(section, Mapping) and key in section:
            section = section[key]
    if isinstance(section, Mapping):
        _enabled(section, "curriculum_learning")
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
    """DeepSpeed's fixed_root difficulty at steps 1, 2, … as change points over replaystore steps 0, 1, …."""
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
    ds_steps = np.arange(1, max(total, last) + 2, dtype=np.float64)  # DeepSpeed's step of replaystore step t is t + 1
    d = np.floor((ds_steps / total) ** (1.0 / root) * (high - low) + low)
    d = np.minimum(d - np.mod(d, step), high)
    change = np.flatnonzero(np.diff(d)) + 1  # first replaystore step of each new difficulty
    return [float(x) for x in d[np.r_[0, change]]], [int(s) - 1 for s in change]


def _discrete_schedule(cfg: Mapping[str, Any], where: str) -> tuple[list[float], list[int]]:
    """fixed_discrete: `difficulty[i]` while DeepSpeed step ≤ `max_step[i]`, i.e. replaystore step ≤ max_step[i] − 1."""
    sc = cfg.get("schedule_config") or {}
    difficulties, max_steps = sc.get("difficulty"), sc.get("max_step")
    if not isinstance(difficulties, list) or not isinstance(max_steps, list):
        raise ValidationError(f"{where}.schedule_config", "fixed_discrete needs lists 'difficulty' and 'max_step'")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in max_steps):
        raise ValidationError("steps", f"each max_step must be an integer, got {max_steps}")
    unused = sum(1 for s in max_steps if s < 1)  # DeepSpeed's first step is 1: these difficulties are never used
    return list(difficulties[unused:]), [s - 1 for s in max_steps[unused:]]


def _schedule(cfg: Mapping[str, Any], where: str) -> tuple[list[float], list[int]]:
    schedule = cfg.get("schedule_type")
    if schedule == "fixed_discrete":
        return _discrete_schedule(cfg, where)
    if schedule in ("fixed_linear", "fixed_root"):
        root = 1.0 if schedule == "fixed_linear" else _number(cfg.get("schedule_config") or {}, "root_degree", f"{where}.schedule_config")
        if root <= 0 or not math.isfinite(root):
            raise ValidationError(f"{where}.schedule_config.root_degree", f"must be > 0, got {root!r}")
        return _root_schedule(cfg, where, root)
    raise ValidationError(f"{where}.schedule_type", f"must be one of {list(SCHEDULES)}, got {schedule!r}")


def definition_from_deepspeed_metric(metric: str, cfg: Mapping[str, Any], seed: int = 0) -> Imported:
    """One DeepSpeed curriculum metric config → an ordering definition or a single-cluster schedule."""
    validate_metric(metric)
    where = f"curriculum_metrics.{metric}"
    if not isinstance(cfg, Mapping):
        raise ValidationError(where, f"must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("difficulty_type", "value")
    if kind not in ("value", "percentile"):
        raise ValidationError(f"{where}.difficulty_type", f"must be 'value' or 'percentile', got {kind!r}")
    clustering = cfg.get("clustering_type", "schedule_based")
    if clustering not in CLUSTERING:
        raise ValidationError(f"{where}.clustering_type", f"must be one of {list(CLUSTERING)}, got {clustering!r}")
    difficulties, steps = _schedule(cfg, where)
    provenance = {"deepspeed": {metric: dict(cfg)}}
    if clustering == "single_cluster":
        return SeqlenCurriculum(metric, SEQLEN_MODES.get(metric, "none"), tuple(difficulties), tuple(steps), imported_from=provenance)
    if kind == "percentile":
        top = _number(cfg, "max_difficulty", where)
        if top <= 0:
            raise ValidationError(f"{where}.max_difficulty", f"a percentile max_difficulty must be > 0, got {top:g}")
        if not all(is_finite_number(d) for d in difficulties):
            raise ValidationError(f"{where}.difficulty", f"percentile difficulties must be numbers, got {difficulties}")
        pacing = DiscretePacing(tuple(d / top for d in difficulties), tuple(steps))
        return OrderingDefinition("easy_to_hard", metric, pacing, seed, imported_from=provenance)
    return OrderingDefinition(
        "easy_to_hard", metric, None, seed, difficulty_type="value", value_schedule=(tuple(difficulties), tuple(steps)), imported_from=provenance
    )


def _legacy(cfg: Mapping[str, Any]) -> SeqlenCurriculum:
    """DeepSpeed's legacy `curriculum_learning` (engine path): the model truncates to `curriculum_seqlen`."""
    kind = cfg.get("curriculum_type")
    if kind != "seqlen":
        raise ValidationError("curriculum_learning.curriculum_type", f"only 'seqlen' exists in DeepSpeed, got {kind!r}")
    difficulties, steps = _schedule(cfg, "curriculum_learning")
    return SeqlenCurriculum("seqlen", "truncate", tuple(difficulties), tuple(steps), imported_from={"deepspeed": {"curriculum_learning": dict(cfg)}})


def from_deepspeed(config: Mapping[str, Any] | str | Path, seed: int = 0) -> dict[str, Imported]:
    """A DeepSpeed config (mapping, JSON text or path to a JSON file) → {metric: definition or schedule}.

    The legacy section comes back under the name "seqlen".
    """
    if isinstance(config, Path) or (isinstance(config, str) and not config.lstrip().startswith("{")):
        config = Path(config).read_text()
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ValidationError("config", f"is not valid JSON: {exc}") from None
    if not isinstance(config, Mapping):
        raise ValidationError("config", f"must be a mapping, got {type(config).__name__}")
    metrics, legacy = _sections(config)
    imported: dict[str, Imported] = {metric: definition_from_deepspeed_metric(metric, cfg, seed) for metric, cfg in (metrics or {}).items()}
    if legacy is not None:
        if "seqlen" in imported:
            raise ValidationError("curriculum_learning", "both the legacy section and a data-efficiency metric are named 'seqlen': rename the metric")
        imported["seqlen"] = _legacy(legacy)
    return imported
