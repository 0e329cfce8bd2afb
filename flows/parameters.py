"""Flow parameters: typed signatures checked before any work, and the store they point at.

Prefect's own check raises its `ParameterTypeError`; flows switch it off and use `checked`, so a
bad parameter raises the `ValidationError(field, rule)` every other replaystore entry point raises,
and the flow run fails before any task (the store is untouched). The flow's signature stays the one
source of its parameter schema, for callers, deployments and the Prefect UI alike.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar, get_type_hints

import pydantic
from pydantic import AfterValidator, Field

import replaystore
from replaystore.errors import ValidationError
from replaystore.store import validate_name

P = ParamSpec("P")
R = TypeVar("R")


def _table_names(names: list[str] | None) -> list[str] | None:
    for name in names or []:
        validate_name(name)
    return names


Name = Annotated[str, AfterValidator(validate_name)]  # a table or buffer name
StoreURI = Annotated[str | None, Field(description="store URI; default $REPLAYSTORE_URI or ./replaystore-data")]
TableNames = Annotated[
    list[str] | None,
    AfterValidator(_table_names),
    Field(description="tables to work on; default every table of the relevant kind"),
]
Hours = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Strict(pydantic.BaseModel):
    """A nested parameter group: unknown keys are refused, not ignored."""

    model_config = pydantic.ConfigDict(extra="forbid")


def parameters_model(fn: Callable[..., object]) -> type[pydantic.BaseModel]:
    """A pydantic model of a function's annotated parameters (defaults kept, required ones required)."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {
        name: (hints.get(name, Any), ... if p.default is inspect.Parameter.empty else p.default) for name, p in inspect.signature(fn).parameters.items()
    }
    return pydantic.create_model(f"{fn.__name__}_parameters", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def checked(fn: Callable[P, R]) -> Callable[P, R]:
    """Validate a flow's arguments against its annotated signature before its body runs."""
    signature = inspect.signature(fn)
    model = parameters_model(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError("parameters", str(exc)) from None
        try:
            values = model.model_validate(bound.arguments)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "parameters"
            rule = first["msg"].removeprefix("Value error, ")
            raise ValidationError(field, f"{rule} (got {first.get('input')!r})") from None
        return fn(**{name: getattr(values, name) for name in signature.parameters})  # type: ignore[call-arg]

    return wrapper


def open_store(store_uri: str | None) -> replaystore.Store:
    """The store a flow works on; a malformed URI fails here, before any task."""
    return replaystore.open(store_uri)
