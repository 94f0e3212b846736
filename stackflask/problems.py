"""Startup problems: collected from every phase, raised together as one exception.

Pure; startup time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class StartupError(Exception):
    """The configuration cannot be served. One line per problem, each naming its place.

    ``problems`` holds the lines; ``str()`` joins them.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Problems(list[str]):
    """Problems collected across startup phases, raised together.

    ``broken`` names the APIs whose spec or module failed, so later phases skip
    them instead of reporting the same cause again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()

    def raise_if_any(self) -> None:
        if self:
            raise StartupError(self)


def field_path(parts: Iterable[Any]) -> str:
    """``["providers", "weather", 0, "config"]`` -> ``providers.weather[0].config``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def flatten_messages(messages: Any, where: list[Any] | None = None) -> list[tuple[list[Any], str]]:
    """marshmallow's nested error messages as ``(path, message)`` pairs."""
    where = where or []
    if isinstance(messages, Mapping):
        out = []
        for key, value in messages.items():
            out += flatten_messages(value, where if key == "_schema" else [*where, key])
        return out
    if isinstance(messages, list):
        out = []
        for item in messages:
            out += flatten_messages(item, where)
        return out
    return [(where, str(messages))]


def validation_problems(
    messages: Any, shown: str, where: Iterable[Any] = ()
) -> list[str]:
    """One ``file: field.path: message`` line per marshmallow error message."""
    return [
        f"{shown}: {field_path([*where, *inner]) or '(top level)'}: {message}"
        for inner, message in flatten_messages(messages)
    ]
