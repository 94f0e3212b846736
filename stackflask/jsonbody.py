"""A request body's JSON, as JSON has it: strict, each unfit value located.

Pure (no Flask); request time. Python's JSON parser reads more than JSON:
``NaN``, ``Infinity`` and ``-Infinity``, numbers too large for a float (``1e400``
is ``inf``), and lone surrogates (``"\\ud800"``), which UTF-8 cannot carry, so
that a response holding one cannot be sent. :func:`load_json` parses as
``json.loads`` does and locates each such value; :func:`read_json_object` turns
a body into the object of parameters, or into the 400's problems.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from .tally import MAX_PROBLEMS


class _NotJson(ValueError):
    """A number JSON cannot carry: ``NaN``, ``Infinity``, or one too large for a float."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(text)
    return value


def _refuse(text: str) -> Any:
    raise _NotJson(text)


class _NotFinite:
    """Stands for a number JSON has not, where the walk can find it."""


NOT_FINITE = _NotFinite()


def _finite_or_marker(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else NOT_FINITE


#: ``json.loads``, refusing the numbers JSON has not.
_STRICT = json.JSONDecoder(parse_float=_finite, parse_constant=_refuse)
#: ``json.loads``, marking the numbers JSON has not with :data:`NOT_FINITE`.
_MARKING = json.JSONDecoder(parse_float=_finite_or_marker, parse_constant=lambda text: NOT_FINITE)

_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(text: str) -> tuple[Any, list[dict[str, Any]]]:
    """JSON text's value, and the problems of the values JSON does not allow in it.

    Raises ``ValueError`` for malformed JSON, ``RecursionError`` for JSON nested
    too deeply. A problem's ``loc`` is inside the value; the walk that finds them
    stops after :data:`MAX_PROBLEMS` and one more.
    """
    try:
        data = _STRICT.decode(text)
    except _NotJson:
        data = _MARKING.decode(text)
        return data, _unfit_values(data)
    # From strict UTF-8, a lone surrogate comes only from a \uXXXX escape: few
    # bodies have one, and only those are walked.
    if "\\ud" in text or "\\uD" in text:
        return data, _unfit_values(data)
    return data, []


def _unfit_values(data: Any) -> list[dict[str, Any]]:
    """Each ``NOT_FINITE`` number and lone surrogate in ``data``, located."""
    problems: list[dict[str, Any]] = []
    path: list[Any] = []  # the keys down to the container walked; the root's is None
    stack: list[Iterator[tuple[Any, Any]]] = [iter([(None, data)])]
    while stack and len(problems) <= MAX_PROBLEMS:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            if path:
                path.pop()
            continue
        key, value = entry
        if isinstance(key, str) and _has_surrogate(key):
            problems.append(_not_text(_loc(path, key)))
        if isinstance(value, dict):
            path.append(key)
            stack.append(iter(value.items()))
        elif isinstance(value, list):
            path.append(key)
            stack.append(enumerate(value))
        elif value is NOT_FINITE:
            problems.append({
                "loc": _loc(path, key),
                "msg": "Input should be a finite number (JSON has no NaN or Infinity)",
                "type": "finite_number",
            })
        elif isinstance(value, str) and _has_surrogate(value):
            problems.append(_not_text(_loc(path, key)))
    return problems


def _loc(path: list[Any], key: Any) -> list[Any]:
    return [_shown(k) for k in path[1:]] + [_shown(key)] if path else []


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _shown(key: Any) -> Any:
    """A key as ``loc`` can carry it: a lone surrogate as its ``\\udXXX`` escape."""
    if isinstance(key, str) and _has_surrogate(key):
        return key.encode("utf-8", "backslashreplace").decode("utf-8")
    return key


def _not_text(loc: list[Any]) -> dict[str, Any]:
    return {
        "loc": loc,
        "msg": "Input should be Unicode text, without lone surrogates (\\ud800 to \\udfff)",
        "type": "string_unicode",
    }


def read_json_object(raw: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """A non-empty body's JSON object, or the problems that make it unfit."""
    try:
        # Strictly decoded: json.loads(bytes) would let encoded surrogates through.
        data, problems = load_json(raw.decode(json.detect_encoding(raw)))
    except ValueError as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        return {}, [{"loc": ["body"], "msg": f"Invalid JSON: {reason}.", "type": "json_invalid"}]
    except RecursionError:
        return {}, [{"loc": ["body"], "msg": "Invalid JSON: nested too deeply.", "type": "json_invalid"}]
    if problems:
        return {}, [{**problem, "loc": ["body", *problem["loc"]]} for problem in problems]
    if not isinstance(data, dict):
        return {}, [{
            "loc": ["body"],
            "msg": "The body must be a JSON object keyed by parameter name.",
            "type": "model_attributes_type",
        }]
    return data, []
