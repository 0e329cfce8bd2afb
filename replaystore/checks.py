"""Argument checks shared by every layer: one rule, one wording, one place.

Each raises `ValidationError` naming the argument, the rule and the value, before anything is
written. `integer` takes ints only (a class id of 3.5, or 3.0, is refused rather than truncated);
`whole_number` takes any finite number without a fraction (a budget of `2e6` bytes is fine).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import numpy as np

from replaystore.errors import ValidationError


def is_finite_number(value: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    """True for real numbers that are not NaN or ±inf (bools are not numbers here)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def integer(field: str, value: Any, minimum: int | None = None) -> int:
    """`value` as an int, refusing bools, floats and anything below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        rule = "a whole number" + ("" if minimum is None else f" ≥ {minimum}")
        raise ValidationError(field, f"must be {rule}, got {value!r}")
    return int(value)


def whole_number(field: str, value: Any, minimum: int = 0) -> int:
    """`value` as an int when it is a finite number without a fraction, at least `minimum`."""
    if not is_finite_number(value) or int(value) != value or value < minimum:
        raise ValidationError(field, f"must be a whole number ≥ {minimum}, got {value!r}")
    return int(value)
