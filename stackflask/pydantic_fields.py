"""Types that involve pydantic, validated by pydantic inside a marshmallow field.

Pure, no Flask. Startup asks :func:`involves_pydantic` of each parameter and
result type; such a type gets a :class:`PydanticField`, whose ``TypeAdapter``
applies constraints, discriminated unions, validators, aliases and defaults
exactly as Llama Stack's server (FastAPI) does, and whose errors keep pydantic's
``loc``, ``msg`` and ``type``. pydantic is imported only when an API needs it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from marshmallow import ValidationError, fields, missing

from .fields import Problem, UnsupportedType
from .tally import MAX_PROBLEMS, stop_checking

_METADATA_PACKAGES = ("pydantic", "pydantic_core", "annotated_types")


def is_pydantic_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class (or pydantic dataclass)."""
    return isinstance(tp, type) and (
        hasattr(tp, "model_validate") and hasattr(tp, "model_fields")
        or hasattr(tp, "__pydantic_validator__")
    )


def involves_pydantic(tp: Any, _seen: set[int] | None = None) -> bool:
    """Whether validating ``tp`` needs pydantic: a model anywhere inside it, or
    pydantic or annotated-types metadata in an ``Annotated``."""
    seen = _seen if _seen is not None else set()
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if typing.get_origin(tp) is typing.Annotated:
        inner, *metadata = typing.get_args(tp)
        if any(type(m).__module__.split(".")[0] in _METADATA_PACKAGES for m in metadata):
            return True
        return involves_pydantic(inner, seen)
    if is_pydantic_model(tp):
        return True
    args = typing.get_args(tp)
    if args:
        return any(involves_pydantic(a, seen) for a in args if a is not Ellipsis)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception:  # unresolvable hints are reported where the field is built
            return False
        return any(involves_pydantic(h, seen) for h in hints.values())
    return False


def type_adapter(tp: Any) -> Any:
    """pydantic's ``TypeAdapter`` for ``tp``; :class:`UnsupportedType` if it has none."""
    try:
        from pydantic import TypeAdapter
    except ImportError:
        raise UnsupportedType(f"{tp!r} needs pydantic, which is not installed (pip install pydantic)") from None
    try:
        return TypeAdapter(tp)
    except Exception as exc:  # PydanticSchemaGenerationError, PydanticUserError, ...
        raise UnsupportedType(f"{tp!r}: pydantic cannot validate it: {exc}") from None


#: More errors than this are counted, not listed: pydantic makes a dict of each,
#: and millions take minutes.
LISTED_ERRORS = 10_000
#: A plain ``list[X]`` is validated this many items at a time, and no further
#: once a slice has problems enough: pydantic keeps every error of what it
#: validates, some 300 bytes each.
SLICE = 1000


def problems_of(exc: ValueError) -> list[Problem]:
    """pydantic's errors (or a plain ``ValueError``) as located :class:`Problem` items."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [Problem(str(exc), "value_error")]
    count = exc.error_count() if hasattr(exc, "error_count") else 0
    if count > LISTED_ERRORS:
        return [Problem(f"{count} problems, too many to list", "too_many_errors")]
    return [
        Problem(item.get("msg") or "Invalid value.", item.get("type") or "value_error",
                tuple(item.get("loc", ())))
        for item in errors(include_url=False, include_input=False)
    ]


class PydanticField(fields.Field):
    """A value of a pydantic-involving type, validated by pydantic's ``TypeAdapter``.

    ``null`` is pydantic's to accept or refuse, so a required non-optional
    parameter sent ``null`` gets pydantic's error for that parameter.
    """

    def __init__(self, tp: Any, *, json_text: bool = False, **kwargs: Any) -> None:
        """``json_text`` takes a value's JSON text and validates it in pydantic's
        strict JSON mode (results); otherwise Python data, in pydantic's lax mode
        as Llama Stack's server validates requests."""
        super().__init__(**kwargs)
        self.type = tp
        self.adapter = type_adapter(tp)
        self.json_text = json_text
        self.sliced = typing.get_origin(tp) is list and not json_text

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        if value is missing:  # required, or the default: marshmallow's business
            return super().deserialize(value, attr, data, **kwargs)
        output = self._deserialize(value, attr, data, **kwargs)
        self._validate(output)
        return output

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if self.sliced and isinstance(value, list) and len(value) > SLICE:
            return self._deserialize_slices(value)
        try:
            if self.json_text:
                return self.adapter.validate_json(value, strict=True)
            return self.adapter.validate_python(value)
        except ValueError as exc:
            raise ValidationError(problems_of(exc)) from None  # type: ignore[arg-type]

    def _deserialize_slices(self, value: list[Any]) -> list[Any]:
        """A long list, :data:`SLICE` items at a time, as pydantic would the whole."""
        result: list[Any] = []
        problems: list[Problem] = []
        for start in range(0, len(value), SLICE):
            try:
                result += self.adapter.validate_python(value[start:start + SLICE])
            except ValueError as exc:
                problems += [_shifted(problem, start) for problem in problems_of(exc)]
                if len(problems) > MAX_PROBLEMS:
                    stop_checking()
                    break
        if problems:
            raise ValidationError(problems)  # type: ignore[arg-type]
        return result


def _shifted(problem: Problem, start: int) -> Problem:
    """``problem`` of a slice, located in the whole list."""
    if not problem.loc or not isinstance(problem.loc[0], int):
        return problem
    return Problem(problem, problem.type, (problem.loc[0] + start, *problem.loc[1:]))
