"""docs/configuration.md's ``server:`` table lists every key the schema takes,
and its links land on headings."""

from __future__ import annotations

import re
from pathlib import Path

from stackflask.config import AuthSchema, ServerSchema
from stackflask.cors import CorsSchema

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIGURATION = DOCS / "configuration.md"


def section(doc: Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    text = doc.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    stop = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, start + len(heading) + 2)
    return text[start : stop.start() if stop else len(text)]


def first_column(text: str) -> set[str]:
    """The backquoted names in the first column of the first table in ``text``."""
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    names: set[str] = set()
    for row in rows:
        names.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    return names


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_server_table_lists_every_key():
    documented = first_column(section(CONFIGURATION, "### The `server:` section"))
    keys = set(ServerSchema._declared_fields) | {
        f"auth.{key}" for key in AuthSchema._declared_fields
    }
    assert documented == keys, (
        "docs/configuration.md, 'The `server:` section': "
        f"undocumented {sorted(keys - documented)}, not in the schema {sorted(documented - keys)}"
    )


def test_the_cors_table_lists_every_field():
    documented = first_column(section(CONFIGURATION, "### CORS"))
    assert documented == set(CorsSchema._declared_fields)


def test_the_server_tables_links_land_on_headings():
    text = section(CONFIGURATION, "### The `server:` section")
    for target, anchor in re.findall(r"\]\(([\w.-]*)#([\w-]+)\)", text):
        doc = DOCS / target if target else CONFIGURATION
        assert anchor in anchors(doc), f"{target or 'configuration.md'}#{anchor} is not a heading"
