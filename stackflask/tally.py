"""How many problems one request has, and the most a 400 lists.

Pure (no Flask); request time. While a :class:`ProblemCount` is active (``with
ProblemCount() as count:`` around one request's binding), lists and mappings
stop checking their items soon after :data:`MAX_PROBLEMS` problems (see
:mod:`stackflask.fields`), so that a bad request costs little however large it
is; :func:`capped` then lists the first problems and says how many more.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

#: The most problems a 400 lists; checking stops soon after.
MAX_PROBLEMS = 100


class ProblemCount:
    """The problems found so far in one request, and whether checking stopped.

    ``with ProblemCount() as count:`` makes it the count fields add to.
    """

    __slots__ = ("found", "stopped", "_token")

    def __init__(self) -> None:
        self.found = 0
        self.stopped = False

    def __enter__(self) -> ProblemCount:
        self._token = _COUNT.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _COUNT.reset(self._token)

    def tally(self, before: int, messages: Any) -> bool:
        """Count one item's ``messages`` (``before`` is :attr:`found` before the
        item); whether its container must stop checking."""
        self.found = before + count_problems(messages)
        if self.found > MAX_PROBLEMS:
            self.stopped = True
        return self.stopped


_COUNT: contextvars.ContextVar[ProblemCount | None] = contextvars.ContextVar(
    "stackflask_problem_count", default=None
)


def current_count() -> ProblemCount | None:
    """The active :class:`ProblemCount`, if any."""
    return _COUNT.get()


def stop_checking() -> None:
    """Say that a field stopped checking a value before its end, problems enough
    found; the 400 then says there are at least so many more."""
    count = _COUNT.get()
    if count is not None:
        count.stopped = True


def count_problems(messages: Any) -> int:
    """How many items :func:`~stackflask.fields.flatten_errors` makes of ``messages``."""
    if isinstance(messages, Mapping):
        return sum(count_problems(value) for value in messages.values())
    if isinstance(messages, list):
        return sum(count_problems(item) for item in messages)
    return 1


def capped(problems: list[dict[str, Any]], stopped: bool) -> list[dict[str, Any]]:
    """The first :data:`MAX_PROBLEMS` problems, then one saying how many more were
    found (at least, when checking ``stopped`` early)."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    count = f"at least {more}" if stopped else str(more)
    return [*problems[:MAX_PROBLEMS], {
        "loc": problems[MAX_PROBLEMS]["loc"][:1],
        "msg": f"... and {count} more problem{'' if more == 1 else 's'}"
        + (" (checking stopped there)" if stopped else ""),
        "type": "too_many_errors",
    }]
