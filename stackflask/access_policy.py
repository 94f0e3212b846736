"""Access policy: Llama Stack 0.2.16's ``server.auth.access_policy`` rules.

Pure (no Flask). Startup time parses the rules (:func:`parse_rules`, which the
run config's schema calls, so a bad rule is a startup error naming its index
and field) and compiles them for the served routes (:class:`RoutePolicy`).
Request time asks :meth:`RoutePolicy.denial`: one dict lookup, then the few
rules that can match the route. :func:`is_action_allowed` is the general
decision, Llama Stack's, for providers that check their own resources.

A route is the resource ``<api>::<method>`` (``weather::get_forecast``, so
``weather::*`` is the whole API); its action comes from its HTTP method
(:data:`ROUTE_ACTIONS`); it has no owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

ACTIONS = ("create", "read", "update", "delete")

#: A route's action, from the HTTP method of its ``@webmethod``.
ROUTE_ACTIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}

#: The condition forms Llama Stack 0.2.16 knows, in its order.
CONDITIONS = (
    "user is owner",
    "user is not owner",
    "user with <value> in <attribute>",
    "user with <value> not in <attribute>",
    "user in owners <attribute>",
    "user not in owners <attribute>",
)

_RULE_KEYS = ("permit", "forbid", "when", "unless", "description")
_SCOPE_KEYS = ("principal", "actions", "resource")


class User(Protocol):
    """Who asks (or owns): :class:`stackflask.auth.Principal` is one."""

    @property
    def name(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, Sequence[str]]: ...


@dataclass(frozen=True)
class Condition:
    """One ``when`` / ``unless`` condition. ``form`` is one of :data:`CONDITIONS`."""

    form: str
    attribute: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        return (
            self.form.replace("<attribute>", self.attribute or "")
            .replace("<value>", self.value or "")
        )

    def matches(self, user: User, owner: User | None) -> bool:
        """Whether the condition holds for ``user`` on a resource owned by ``owner``."""
        form = self.form
        if form == "user is owner":
            return owner is not None and owner.name == user.name
        if form == "user is not owner":
            return owner is None or owner.name != user.name
        if form.startswith("user with"):
            found = self.value in user.attributes.get(self.attribute or "", ())
            return found if form == "user with <value> in <attribute>" else not found
        # user (not) in owners <attribute>: an owner without values is no constraint
        required = owner.attributes.get(self.attribute or "") if owner is not None else None
        held = user.attributes.get(self.attribute or "") or ()
        inside = not required or any(value in held for value in required)
        return inside if form == "user in owners <attribute>" else not inside

    @property
    def tests_owner(self) -> bool:
        """Whether the condition reads the resource's owner (else only the user)."""
        return not self.form.startswith("user with")

    @property
    def unowned(self) -> bool:
        """What a condition on the owner is for a resource without one, whoever asks."""
        return self.form in ("user is not owner", "user in owners <attribute>")


@dataclass(frozen=True)
class Scope:
    """What a rule covers: ``actions``, and only ``principal`` and ``resource`` if given."""

    actions: tuple[str, ...]
    principal: str | None = None
    resource: str | None = None

    def covers(self, action: str, resource: str, principal: str) -> bool:
        """Llama Stack's ``matches_scope``; ``type::*`` covers every resource of a type."""
        if self.resource is not None and not matches_resource(self.resource, resource):
            return False
        if self.principal is not None and self.principal != principal:
            return False
        return action in self.actions


@dataclass(frozen=True)
class AccessRule:
    """One rule: exactly one of ``permit`` and ``forbid``; at most one of
    ``when`` (all must hold) and ``unless`` (the rule applies unless all hold)."""

    permit: Scope | None = None
    forbid: Scope | None = None
    when: tuple[Condition, ...] = ()
    unless: tuple[Condition, ...] = ()
    description: str | None = None

    @property
    def scope(self) -> Scope:
        scope = self.permit or self.forbid
        assert scope is not None
        return scope

    def applies(self, user: User, owner: User | None) -> bool:
        """Whether the conditions let the rule decide, once its scope covers the request."""
        if self.when:
            return all(c.matches(user, owner) for c in self.when)
        if self.unless:
            return not all(c.matches(user, owner) for c in self.unless)
        return True


#: Llama Stack's rules when none are configured: every action, for a user who
#: shares the owner's roles, teams, projects and namespaces (an unowned
#: resource, such as a route, is open to every authenticated user).
DEFAULT_POLICY = (
    AccessRule(
        permit=Scope(ACTIONS),
        when=tuple(
            Condition("user in owners <attribute>", name)
            for name in ("roles", "teams", "projects", "namespaces")
        ),
    ),
)


def matches_resource(pattern: str, resource: str) -> bool:
    """``pattern`` is ``resource`` itself, or ``type::*`` with ``resource`` of that type."""
    return pattern == resource or (pattern.endswith("::*") and resource.startswith(pattern[:-1]))


def is_action_allowed(
    policy: Sequence[AccessRule],
    action: str,
    resource: str,
    user: User | None,
    owner: User | None = None,
) -> bool:
    """Llama Stack 0.2.16's decision: the first rule whose scope covers the
    request and whose conditions apply permits or forbids; none denies.

    ``resource`` is ``type::identifier``; no ``user`` (no authentication)
    allows everything; an empty ``policy`` is :data:`DEFAULT_POLICY`.
    """
    if user is None:
        return True
    for rule in policy or DEFAULT_POLICY:
        if rule.scope.covers(action, resource, user.name) and rule.applies(user, owner):
            return rule.permit is not None
    return False


class InvalidPolicy(ValueError):
    """Rules that cannot be used. ``messages`` nests each message under its
    rule's index and field, as marshmallow's errors nest."""

    def __init__(self, messages: dict[int, dict[str, Any]]) -> None:
        self.messages = messages
        super().__init__(messages)


def parse_rules(rules: Sequence[Mapping[str, Any]]) -> tuple[AccessRule, ...]:
    """The rules, as written in a run config, checked. Raises :class:`InvalidPolicy`
    listing every problem.

    Llama Stack's syntax, more strictly: unknown keys, an empty ``actions``,
    ``when`` or ``unless``, and a scope that is not a mapping are errors too.
    """
    messages: dict[int, dict[str, Any]] = {}
    parsed = []
    for index, rule in enumerate(rules):
        problems: dict[str, Any] = {}
        parsed.append(_parse_rule(rule, problems))
        if problems:
            messages[index] = problems
    if messages:
        raise InvalidPolicy(messages)
    return tuple(parsed)


def _parse_rule(rule: Mapping[str, Any], problems: dict[str, Any]) -> AccessRule:
    for key in rule:
        if key not in _RULE_KEYS:
            problems[key] = [f"unknown field (known: {', '.join(_RULE_KEYS)})"]
    scopes: dict[str, Scope] = {}
    for effect in ("permit", "forbid"):
        if rule.get(effect) is not None:
            scopes[effect] = _parse_scope(rule[effect], problems.setdefault(effect, {}))
            if not problems[effect]:
                del problems[effect]
    if len(scopes) != 1:
        problems.setdefault("_schema", []).append(
            "give exactly one of 'permit' and 'forbid'"
        )
    conditions: dict[str, tuple[Condition, ...]] = {}
    for kind in ("when", "unless"):
        if rule.get(kind) is not None:
            conditions[kind] = _parse_conditions(rule[kind], kind, problems)
    if len(conditions) > 1:
        problems.setdefault("_schema", []).append(
            "'when' and 'unless' are mutually exclusive: give one"
        )
    description = rule.get("description")
    if description is not None and not isinstance(description, str):
        problems["description"] = [f"expected a string, got {type(description).__name__}"]
    if problems:
        return AccessRule()
    return AccessRule(
        permit=scopes.get("permit"),
        forbid=scopes.get("forbid"),
        when=conditions.get("when", ()),
        unless=conditions.get("unless", ()),
        description=description,
    )


def _parse_scope(scope: Any, problems: dict[str, Any]) -> Scope:
    if not isinstance(scope, Mapping):
        problems["_schema"] = [
            f"expected a mapping of {', '.join(_SCOPE_KEYS)}, got {type(scope).__name__}"
        ]
        return Scope(())
    for key in scope:
        if key not in _SCOPE_KEYS:
            problems[key] = [f"unknown field (known: {', '.join(_SCOPE_KEYS)})"]
    for key in ("principal", "resource"):
        if scope.get(key) is not None and not isinstance(scope[key], str):
            problems[key] = [f"expected a string, got {type(scope[key]).__name__}"]
    actions: Any = scope.get("actions")
    if isinstance(actions, str):
        actions = [actions]
    if actions is None:
        problems["actions"] = [f"required: a list of {', '.join(ACTIONS)}"]
    elif not isinstance(actions, list) or not actions:
        problems["actions"] = [f"expected a non-empty list of {', '.join(ACTIONS)}"]
    else:
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            problems["actions"] = [
                f"unknown action {a!r} (known: {', '.join(ACTIONS)})" for a in unknown
            ]
    if problems:
        return Scope(())
    return Scope(tuple(actions), scope.get("principal"), scope.get("resource"))


def _parse_conditions(value: Any, kind: str, problems: dict[str, Any]) -> tuple[Condition, ...]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        problems[kind] = [f"expected a condition or a non-empty list of conditions, got {value!r}"]
        return ()
    parsed = []
    for text in texts:
        try:
            parsed.append(parse_condition(text))
        except ValueError as exc:
            problems.setdefault(kind, []).append(str(exc))
    return tuple(parsed)


def parse_condition(text: str) -> Condition:
    """One condition, in Llama Stack's words (spaces between them are free).
    Raises ``ValueError`` naming the known forms."""
    match text.split():
        case ["user", "is", "owner"]:
            return Condition("user is owner")
        case ["user", "is", "not", "owner"]:
            return Condition("user is not owner")
        case ["user", "with", value, "in", attribute]:
            return Condition("user with <value> in <attribute>", attribute, value)
        case ["user", "with", value, "not", "in", attribute]:
            return Condition("user with <value> not in <attribute>", attribute, value)
        case ["user", "in", "owners", attribute]:
            return Condition("user in owners <attribute>", attribute)
        case ["user", "not", "in", "owners", attribute]:
            return Condition("user not in owners <attribute>", attribute)
    raise ValueError(f"unknown condition {text!r} (known: {'; '.join(CONDITIONS)})")


def route_resource(api: str, method: str) -> str:
    """The resource a route is: ``<api>::<method>``, by the Protocol method's name."""
    return f"{api}::{method}"


@dataclass(frozen=True)
class _Check:
    """A rule as it stands for one unowned route: only the user-dependent parts left."""

    permit: bool
    principal: str | None
    conditions: tuple[Condition, ...]
    unless: bool

    def decides(self, user: User) -> bool:
        if self.principal is not None and self.principal != user.name:
            return False
        return all(c.matches(user, None) for c in self.conditions) is not self.unless


@dataclass(frozen=True)
class _Target:
    action: str
    resource: str
    checks: tuple[_Check, ...]


class RoutePolicy:
    """The rules compiled for each route at startup, so that a request costs a
    dict lookup and the few rules that can match its route.

    ``routes`` maps each checked Flask endpoint to its HTTP method and
    resource; ``public_paths`` (``server.auth.public``) and ``OPTIONS``
    requests are not checked, as authentication does not check them.
    """

    def __init__(
        self,
        rules: Sequence[AccessRule],
        routes: Mapping[str, tuple[str, str]],
        public_paths: Iterable[str] = (),
    ) -> None:
        policy = rules or DEFAULT_POLICY
        self.targets = {
            endpoint: _compile(policy, ROUTE_ACTIONS[method], resource)
            for endpoint, (method, resource) in routes.items()
        }
        self.public_paths = frozenset(public_paths)

    def denial(
        self, method: str, endpoint: str | None, path: str, user: User | None
    ) -> str | None:
        """``None`` to go on, or why the request is denied (the 403's ``detail``)."""
        target = self.targets.get(endpoint) if endpoint is not None else None
        if target is None or method == "OPTIONS" or path in self.public_paths:
            return None
        if user is None:  # authentication let it through without a user: fail closed
            return "Permission denied: Insufficient permissions"
        for check in target.checks:
            if check.decides(user):
                if check.permit:
                    return None
                break
        return _denied(target, user)


def _compile(policy: Sequence[AccessRule], action: str, resource: str) -> _Target:
    """The checks that can decide ``action`` on the unowned ``resource``, in order,
    up to the first that decides for every user."""
    checks = []
    for rule in policy:
        scope = rule.scope
        if action not in scope.actions or (
            scope.resource is not None and not matches_resource(scope.resource, resource)
        ):
            continue
        unless = bool(rule.unless)
        conditions = rule.when or rule.unless
        # Conditions on the owner are fixed for an unowned route: decide them now.
        if all(c.unowned for c in conditions if c.tests_owner):
            conditions = tuple(c for c in conditions if not c.tests_owner)
            if unless and not conditions:
                continue  # "unless" always holds: the rule never applies
        elif unless:
            conditions, unless = (), False  # "unless" never holds: the rule always applies
        else:
            continue  # "when" never holds
        check = _Check(rule.permit is not None, scope.principal, conditions, unless)
        checks.append(check)
        if check.principal is None and not check.conditions:
            break
    return _Target(action, resource, tuple(checks))


def _denied(target: _Target, user: User) -> str:
    """Llama Stack's ``AccessDeniedError`` message, as its server sends it."""
    shown = f"{user.name!r}"
    if user.attributes:
        shown += " (attributes: " + ", ".join(f"{k}={v}" for k, v in user.attributes.items()) + ")"
    return (
        f"Permission denied: User {shown} cannot perform action {target.action!r} "
        f"on resource {target.resource!r}"
    )
