"""Docstrings in Llama Stack's style: prose, then ``:param name:`` and ``:returns:``.

Pure; startup time. The OpenAPI document takes summaries, descriptions and
parameter descriptions from them, and ``stackflask routes`` its summaries.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

_DOC_FIELD = re.compile(r"^:\w", re.M)
_DOC_CHUNK = re.compile(r"^:.*?(?=^:|\Z)", re.S | re.M)


@dataclasses.dataclass
class Docstring:
    """A docstring in Llama Stack's style: prose, then ``:param name:`` and
    ``:returns:`` lines (a field may continue on the lines below it)."""

    summary: str = ""
    description: str = ""
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    returns: str = ""

    @property
    def prose(self) -> str:
        return "\n\n".join(part for part in (self.summary, self.description) if part)


def parse_docstring(text: str | None) -> Docstring:
    """The summary (first paragraph, on one line), the rest of the prose, and
    the ``:param:`` and ``:returns:`` fields of ``text``."""
    text = inspect.cleandoc(text or "")
    match = _DOC_FIELD.search(text)
    prose, meta = (text[: match.start()], text[match.start():]) if match else (text, "")
    summary, _, description = prose.strip().partition("\n\n")
    doc = Docstring(" ".join(summary.split()), description.strip())
    for chunk in _DOC_CHUNK.findall(meta):
        head, _, value = chunk[1:].partition(":")
        words, value = head.split(), " ".join(value.split())
        if len(words) == 2 and words[0] in ("param", "parameter", "arg", "argument"):
            doc.params[words[1]] = value
        elif words in (["returns"], ["return"]):
            doc.returns = value
    return doc


def has_fields(text: str) -> bool:
    """Whether ``text`` holds ``:param:``-style fields."""
    return bool(_DOC_FIELD.search(text))
