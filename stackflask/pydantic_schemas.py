"""pydantic's JSON schemas in the OpenAPI document, all types in one pass.

Startup time (the document is built on first request). :mod:`stackflask.openapi`
leaves a slot where a type involving pydantic goes; :func:`fill_slots` asks
pydantic for every slotted type's schema at once, so its models become
components named as pydantic names them (``Model``, ``Model-Input``/
``Model-Output`` when the two differ, a module-qualified name when two models
share one), renamed only where one of stackflask's own components has the name.
"""

from __future__ import annotations

from typing import Any, Literal

from .docstrings import has_fields, parse_docstring

#: pydantic's JSON schema modes: what a request holds, what a result sends.
Mode = Literal["validation", "serialization"]
#: Stands in for a pydantic type's schema until every type is known.
SLOT = "x-stackflask-pydantic"
_COMPONENTS = "#/components/schemas/"


def fill_slots(document: dict[str, Any], types: list[tuple[Mode, Any]]) -> dict[str, Any]:
    """``document`` with pydantic's schema in place of each slot (``{SLOT: i}``
    stands for ``types[i]``, a mode and a ``TypeAdapter``) and its models added
    to the components."""
    components = document["components"]["schemas"]
    schemas, defs = _pydantic_schemas(types)
    taken = set(components) | set(defs)
    renames: dict[str, str] = {}
    for name in defs:
        if name in components:
            renames[name] = _free_name(name, taken)
            taken.add(renames[name])
    for name, schema in defs.items():
        _describe_properties(schema)
        components[renames.get(name, name)] = _renamed(schema, renames)
    return _filled(document, {i: _renamed(s, renames) for i, s in schemas.items()})


def _pydantic_schemas(
    types: list[tuple[Mode, Any]],
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """pydantic's JSON schema of each type (by index) and their shared definitions.

    A type pydantic cannot describe (a ``Callable``, a validator without a
    schema) is left out, so it reads as any value.
    """
    from pydantic import TypeAdapter
    from pydantic.errors import PydanticUserError

    inputs = [(i, mode, adapter) for i, (mode, adapter) in enumerate(types)]
    try:
        found, defs = TypeAdapter.json_schemas(inputs, ref_template=_COMPONENTS + "{model}")
    except PydanticUserError:
        inputs = [i for i in inputs if _describable(i[2], i[1])]
        found, defs = TypeAdapter.json_schemas(inputs, ref_template=_COMPONENTS + "{model}")
    return {i: schema for (i, _), schema in found.items()}, defs.get("$defs", {})


def _describable(adapter: Any, mode: Mode) -> bool:
    from pydantic.errors import PydanticUserError

    try:
        adapter.json_schema(mode=mode)
    except PydanticUserError:
        return False
    return True


def _free_name(name: str, taken: set[str]) -> str:
    """``name2``, ``name3``...: the first not ``taken``."""
    number = 2
    while f"{name}{number}" in taken:
        number += 1
    return f"{name}{number}"


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    """pydantic's schema ``value`` with its references to renamed components
    (``$ref``s and discriminator mappings) following the renames.

    A discriminated union also requires its tag: pydantic refuses a member
    without one even when the member's model gives the tag a default.
    """
    if isinstance(value, dict):
        out = {k: _renamed(v, renames) for k, v in value.items()}
        discriminator = out.get("discriminator")
        tag = discriminator.get("propertyName") if isinstance(discriminator, dict) else None
        if isinstance(tag, str) and tag not in out.get("required", []):
            out["required"] = [*out.get("required", []), tag]
        return out
    if isinstance(value, list):
        return [_renamed(v, renames) for v in value]
    if isinstance(value, str) and value.startswith(_COMPONENTS):
        name = value[len(_COMPONENTS):]
        return _COMPONENTS + renames.get(name, name)
    return value


def _filled(value: Any, schemas: dict[int, dict[str, Any]]) -> Any:
    """``value`` with each slot replaced by its schema (keeping the slot's
    siblings: a default, a description)."""
    if isinstance(value, dict):
        if SLOT in value:
            rest = {k: v for k, v in value.items() if k != SLOT}
            return {**schemas.get(value[SLOT], {}), **_filled(rest, schemas)}
        return {k: _filled(v, schemas) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, schemas) for v in value]
    return value


def _describe_properties(schema: dict[str, Any]) -> None:
    """A model's ``:param name:`` lines (in the description pydantic took from
    its docstring) as its properties' descriptions, unless they have one."""
    text = schema.get("description")
    if not isinstance(text, str) or not has_fields(text):
        return
    doc = parse_docstring(text)
    if doc.prose:
        schema["description"] = doc.prose
    else:
        del schema["description"]
    properties = schema.get("properties", {})
    for name, value in doc.params.items():
        if name in properties:
            properties[name].setdefault("description", value)
