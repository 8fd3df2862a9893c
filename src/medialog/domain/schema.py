"""Request bodies as pydantic models: one declaration both validates a body and is its JSON
Schema in the OpenAPI document (``medialog.api.openapi``), so the two cannot drift apart.

``parse`` lists every problem at once, in the error shape's ``details`` (``{"field", "error"}``,
and ``path`` inside a list or object). Models are strict (JSON types only: ``"5"`` is not a
number, ``true`` not an integer) and refuse unknown fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict

from medialog.domain.errors import ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_VALUE_ERROR = "Value error, "


class Body(BaseModel):
    """Base of every request body."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def rule(check: Callable[[T], T]) -> AfterValidator:
    """A domain rule (raising ``ValidationError``) as a field validator: its message becomes the
    field's problem."""

    def validate(value: T) -> T:
        try:
            return check(value)
        except ValidationError as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(validate)


def _detail(error: Any) -> dict[str, Any]:
    loc = error["loc"]
    message = error["msg"].removeprefix(_VALUE_ERROR)
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    detail: dict[str, Any] = {"field": str(loc[0]) if loc else None, "error": message}
    if len(loc) > 1:  # inside a list or object: where exactly
        detail["path"] = [str(p) if isinstance(p, str) else p for p in loc]
    return detail


def parse(model: type[M], data: Any, *, message: str, code: str = "VALIDATION_ERROR") -> M:
    """``data`` as ``model``, or ``ValidationError(message, code)`` listing every problem."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise ValidationError(message, code=code, details=[_detail(e) for e in errors]) from None
