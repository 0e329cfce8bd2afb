"""A buffer's settings: one row per buffer in the `exemplar_buffers` table, validated on the way in.

Settings live in the store (not in the caller's code) so that every writer, the CLI's budget
report and the prune flow enforce the same budget for a buffer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from replaystore.checks import whole_number
from replaystore.errors import NotFoundError, ValidationError
from replaystore.exemplars.budget import count_parameters, model_nbytes, sample_nbytes
from replaystore.exemplars.policies import make_policy
from replaystore.exemplars.samples import TOKENS
from replaystore.exemplars.selectors import make_selector
from replaystore.schemas import Kind

SETTINGS_TABLE = Kind.EXEMPLAR_BUFFERS.value
ON_OVER_BUDGET = ("evict", "refuse")


@dataclass(frozen=True)
class BufferSettings:
    buffer: str
    budget_bytes: int | None
    model_bytes: int = 0
    model_params: int | None = None
    model_dtype: str | None = None
    count_buffers: bool = False
    policy: str = "fixed_total"
    memory_per_class: int | None = None
    selector: str = "herding"
    seed: int = 0
    on_over_budget: str = "evict"
    sample_shape: tuple[int, ...] | None = None
    sample_dtype: str | None = None
    classes: tuple[int, ...] = ()

    @property
    def exemplar_bytes(self) -> int | None:
        """Bytes left for exemplars once the model is counted (None: no byte limit)."""
        return None if self.budget_bytes is None else self.budget_bytes - self.model_bytes

    @property
    def sample_bytes(self) -> int | None:
        """Bytes of one raw sample, when the buffer's samples have a fixed shape."""
        if self.sample_shape is None or self.sample_dtype in (None, TOKENS):
            return None
        return sample_nbytes(self.sample_shape, self.sample_dtype)

    def row(self) -> dict[str, list[Any]]:
        values = asdict(self)
        values["sample_shape"] = None if self.sample_shape is None else list(self.sample_shape)
        values["classes"] = list(self.classes)
        return {k: [v] for k, v in values.items()}


SETTINGS = (
    "budget",
    "model",
    "model_params",
    "model_dtype",
    "count_buffers",
    "policy",
    "memory_per_class",
    "selector",
    "seed",
    "on_over_budget",
    "sample_shape",
    "sample_dtype",
)


def check_names(given: dict[str, Any]) -> None:
    """A misspelt setting is an error, not a silently ignored keyword."""
    for key in given:
        if key not in SETTINGS:
            raise ValidationError(key, f"unknown exemplar buffer setting (known: {', '.join(SETTINGS)})")


def build(
    name: str,
    budget: Any = None,
    model: torch.nn.Module | None = None,
    model_params: Any = None,
    model_dtype: str | None = None,
    count_buffers: bool = False,
    policy: str = "fixed_total",
    memory_per_class: Any = None,
    selector: str = "herding",
    seed: Any = 0,
    on_over_budget: str = "evict",
    sample_shape: Any = None,
    sample_dtype: Any = None,
) -> BufferSettings:
    """Validate user settings (a budget in bytes; a model as a module or a parameter count and dtype)."""
    budget_bytes = None if budget is None else whole_number("budget", budget)
    dtype: str | None = model_dtype
    if model is not None and model_params is not None:
        raise ValidationError("model", "pass a torch.nn.Module or model_params, not both")
    if model is not None:
        if not isinstance(model, torch.nn.Module):
            raise ValidationError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
        first = next(model.parameters(), None)
        dtype = model_dtype or (str(first.dtype).removeprefix("torch.") if first is not None else "float32")
        nbytes = model_nbytes(model, dtype=dtype, count_buffers=count_buffers)
        params = count_parameters(model, count_buffers)
    elif model_params is not None:
        dtype = model_dtype or "float32"
        params = whole_number("model_params", model_params)
        nbytes = model_nbytes(params=params, dtype=dtype)
    else:
        params, nbytes = None, 0
    make_policy(policy, memory_per_class)
    make_selector(selector, whole_number("seed", seed))
    if on_over_budget not in ON_OVER_BUDGET:
        raise ValidationError("on_over_budget", f"must be one of {list(ON_OVER_BUDGET)}, got {on_over_budget!r}")
    if budget_bytes is None and policy == "fixed_total":
        raise ValidationError("budget", "policy 'fixed_total' needs a budget in bytes (e.g. budget=2_000_000)")
    shape = None if sample_shape is None else tuple(whole_number("sample_shape", d) for d in sample_shape)
    if sample_dtype is not None and sample_dtype != TOKENS:
        try:
            sample_dtype = np.dtype(sample_dtype).name
        except TypeError:
            raise ValidationError("sample_dtype", f"must be a numpy dtype or 'tokens', got {sample_dtype!r}") from None
    return check_fits(
        BufferSettings(
            name,
            budget_bytes,
            nbytes,
            params,
            dtype,
            bool(count_buffers),
            policy,
            None if memory_per_class is None else int(memory_per_class),
            selector,
            int(seed),
            on_over_budget,
            shape,
            sample_dtype,
        )
    )


def check_fits(settings: BufferSettings) -> BufferSettings:
    """The model alone must fit the budget, or no exemplar ever could."""
    if settings.budget_bytes is not None and settings.model_bytes > settings.budget_bytes:
        raise ValidationError("budget", f"budget {settings.budget_bytes:,} B is smaller than the model's {settings.model_bytes:,} B")
    return settings


def from_row(row: dict[str, Any]) -> BufferSettings:
    names = {f.name for f in fields(BufferSettings)}
    values = {k: v for k, v in row.items() if k in names}
    values["sample_shape"] = None if values.get("sample_shape") is None else tuple(values["sample_shape"])
    values["classes"] = tuple(values.get("classes") or ())
    return BufferSettings(**values)


def differences(stored: BufferSettings, asked: BufferSettings) -> list[str]:
    """Settings a caller asked for that differ from the stored ones (shape/classes learned later are ignored)."""
    learned = {"classes", "sample_shape", "sample_dtype"}
    diffs = [f.name for f in fields(BufferSettings) if f.name not in learned and getattr(stored, f.name) != getattr(asked, f.name)]
    for name in ("sample_shape", "sample_dtype"):
        if getattr(asked, name) is not None and getattr(stored, name) != getattr(asked, name):
            diffs.append(name)
    return diffs


def missing(name: str, uri: str) -> NotFoundError:
    return NotFoundError(f"unknown exemplar buffer '{name}' in store {uri}; create it with store.exemplars('{name}', budget=...)")
