"""Docstrings in Llama Stack's style: prose, then ``:param name:`` and ``:returns:``.

Pure; startup time. The OpenAPI document takes summaries, descriptions and
parameter descriptions from them, and ``stackflask routes`` its summaries,
as plain text (:func:`plain_text`).
"""

from __future__ import annotations

import dataclasses
import inspect
import re

_DOC_FIELD = re.compile(r"^:\w", re.M)
_DOC_CHUNK = re.compile(r"^:.*?(?=^:|\Z)", re.S | re.M)

#: reST inline markup, each with the group that holds its plain text:
#: ``:role:`Title <target>``` and ```title <url>`_`` (the title), ``:role:`~a.b.C```
#: (``C``), ``:role:`a.b.C```, ````literal````, ``**strong**``, ``*emphasis*``,
#: ```interpreted```.
_MARKUP = re.compile(
    r"(?::[\w.+-]+:)?`(?P<title>[^`<]+?)\s*<[^`>]*>`_{0,2}"
    r"|:[\w.+-]+:`~(?:[^`]*\.)?(?P<short>[^`.]+)`"
    r"|:[\w.+-]+:`(?P<role>[^`]+)`"
    r"|``(?P<literal>.+?)``"
    r"|\*\*(?P<strong>[^*]+?)\*\*"
    r"|(?<![\w*\\])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?!\w)"
    r"|`(?P<interpreted>[^`]+?)`_{0,2}"
)
#: A field list on the summary's own line (``Get it. :param x: ...``), dropped.
_INLINE_FIELD = re.compile(
    r"(?:\A|\s+):(?:param|parameter|arg|argument|type|returns?|rtype|raises?)(?:\s[^:]*)?:.*\Z",
    re.S,
)


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


def plain_text(text: str) -> str:
    """``text`` without reST inline markup, for the one-line summaries of
    ``stackflask routes``: ````x````, ``*x*``, ``**x**``, ```x``` become ``x``,
    ``:class:`a.X``` ``a.X``, ``:meth:`~a.X.run``` ``run``, ```title <url>`_``
    ``title``; a ``:param x:`` field list on the line is dropped."""
    text = _INLINE_FIELD.sub("", text)
    text = _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    return re.sub(r"\\(.)", r"\1", text)


def has_fields(text: str) -> bool:
    """Whether ``text`` holds ``:param:``-style fields."""
    return bool(_DOC_FIELD.search(text))
