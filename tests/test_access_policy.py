"""``server.auth.access_policy``: Llama Stack 0.2.16's rules, parsed at startup,
applied to external API routes after authentication, handed to providers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import yaml
from conftest import free_port, script, server_env

from stackflask.access_policy import (
    ACTIONS,
    AccessRule,
    Condition,
    RoutePolicy,
    Scope,
    is_action_allowed,
    parse_condition,
    parse_rules,
)
from stackflask.config import load_run_config
from stackflask.problems import StartupError

API = '''
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.orders, provider_type="inline::orders", module="orders_impl")]


class Orders(Protocol):
    @webmethod(route="/orders", method="GET")
    @webmethod(route="/orders/all", method="GET")
    async def list_orders(self) -> list[str]: ...

    @webmethod(route="/orders", method="POST")
    async def create_order(self, item: str) -> str: ...

    @webmethod(route="/orders/{order_id}", method="PUT")
    async def update_order(self, order_id: str, item: str) -> str: ...

    @webmethod(route="/orders/{order_id}", method="PATCH")
    async def rename_order(self, order_id: str, item: str) -> str: ...

    @webmethod(route="/orders/{order_id}", method="DELETE")
    async def delete_order(self, order_id: str) -> str: ...

    @webmethod(route="/orders/audit", method="GET", required_scope="orders.audit")
    async def audit(self) -> list[str]: ...

    @webmethod(route="/orders/status", method="GET", public=True)
    async def status(self) -> str: ...

    @webmethod(route="/orders/ping", method="GET")
    async def ping(self) -> str: ...
'''

IMPL = '''
class Orders:
    def __init__(self, policy):
        self.policy = policy

    async def list_orders(self):
        return ["o1"]

    async def create_order(self, item):
        return item

    async def update_order(self, order_id, item):
        return item

    async def rename_order(self, order_id, item):
        return item

    async def delete_order(self, order_id):
        return order_id

    async def audit(self):
        return ["audited"]

    async def status(self):
        return "up"

    async def ping(self):
        return "pong"


async def get_provider_impl(config, deps, policy):
    return Orders(policy)
'''

#: name -> (token, scopes, attributes)
USERS: dict[str, tuple[str, list[str], dict[str, list[str]]]] = {
    "alice": ("tok-alice", ["orders.audit"], {"roles": ["admin"], "teams": ["red"]}),
    "bob": ("tok-bob", [], {"roles": ["user"], "teams": ["blue"]}),
    "carol": ("tok-carol", ["orders.audit"], {}),
    "dave": ("tok-dave", [], {"roles": ["user", "auditor"], "teams": ["red"]}),
}

#: Ported from Llama Stack 0.2.16: the examples of ``AccessRule``'s docstring and
#: of its ``test_access_control.py``, with the routes' resource type (``orders``)
#: where they name ``model`` or ``vector_db``.
POLICIES: dict[str, list[dict[str, Any]]] = {
    "docstring-examples": yaml.safe_load('''
        - permit:
            principal: alice
            actions: [create, read, delete]
            resource: orders::*
          description: alice has full access to all orders routes but update
        - permit:
            principal: bob
            actions: [read]
            resource: orders::list_orders
          description: bob may list orders only
        - forbid:
            actions: [create, read, delete]
            resource: vector_db::*
          unless: user with admin in roles
          description: only user with admin role can use vector_db resources
    '''),
    "principals-then-forbid": yaml.safe_load('''
        - permit:
            principal: alice
            actions: [create, read, delete]
        - permit:
            principal: bob
            actions: [read]
            resource: orders::list_orders
        - permit:
            principal: carol
            actions: [read]
            resource: orders::ping
        - forbid:
            actions: [create, read, delete]
    '''),
    "admins-only-write": yaml.safe_load('''
        - permit:
            actions: [read]
          when: user in owners teams
          description: any user reads unowned resources (no owner teams to match)
        - forbid:
            actions: [create, update, delete]
          unless: user with admin in roles
          description: only admins change anything
        - permit:
            actions: [create, update, delete]
    '''),
    "owner-conditions": yaml.safe_load('''
        - permit:
            actions: [read]
          when: user is owner
          description: never holds on a route, which has no owner
        - permit:
            actions: [create]
          when: [user is not owner, user with red in teams]
        - forbid:
            actions: [update]
          unless: user not in owners roles
          description: "'not in owners' fails without an owner: always applies"
        - permit:
            actions: [read, update, delete]
          unless: user in owners roles
          description: "'in owners' holds without an owner: never applies"
    '''),
    "only-other-resources": yaml.safe_load('''
        - permit:
            actions: [create, read, update, delete]
            resource: model::*
    '''),
}


def request_of(route: str) -> tuple[str, str, dict[str, Any] | None]:
    method, path = route.split(" ")
    body = {"item": "x"} if method in ("POST", "PUT", "PATCH") else None
    return method, path, body


#: (policy, user, route, status)
DECISIONS = [
    ("docstring-examples", "alice", "GET /v1/orders", 200),
    ("docstring-examples", "alice", "GET /v1/orders/all", 200),
    ("docstring-examples", "alice", "POST /v1/orders", 200),
    ("docstring-examples", "alice", "PUT /v1/orders/1", 403),
    ("docstring-examples", "alice", "DELETE /v1/orders/1", 200),
    ("docstring-examples", "bob", "GET /v1/orders", 200),
    ("docstring-examples", "bob", "GET /v1/orders/all", 200),
    ("docstring-examples", "bob", "GET /v1/orders/ping", 403),
    ("docstring-examples", "bob", "POST /v1/orders", 403),
    ("docstring-examples", "dave", "GET /v1/orders", 403),
    ("principals-then-forbid", "alice", "GET /v1/orders/ping", 200),
    ("principals-then-forbid", "alice", "PATCH /v1/orders/1", 403),
    ("principals-then-forbid", "bob", "GET /v1/orders", 200),
    ("principals-then-forbid", "bob", "GET /v1/orders/ping", 403),
    ("principals-then-forbid", "carol", "GET /v1/orders/ping", 200),
    ("principals-then-forbid", "carol", "GET /v1/orders", 403),
    ("principals-then-forbid", "dave", "PATCH /v1/orders/1", 403),
    ("admins-only-write", "bob", "GET /v1/orders", 200),
    ("admins-only-write", "carol", "GET /v1/orders/ping", 200),
    ("admins-only-write", "bob", "POST /v1/orders", 403),
    ("admins-only-write", "bob", "PUT /v1/orders/1", 403),
    ("admins-only-write", "dave", "DELETE /v1/orders/1", 403),
    ("admins-only-write", "alice", "POST /v1/orders", 200),
    ("admins-only-write", "alice", "PATCH /v1/orders/1", 200),
    ("admins-only-write", "alice", "DELETE /v1/orders/1", 200),
    ("owner-conditions", "alice", "GET /v1/orders", 403),
    ("owner-conditions", "alice", "POST /v1/orders", 200),
    ("owner-conditions", "dave", "POST /v1/orders", 200),
    ("owner-conditions", "bob", "POST /v1/orders", 403),
    ("owner-conditions", "alice", "PUT /v1/orders/1", 403),
    ("owner-conditions", "alice", "DELETE /v1/orders/1", 403),
    ("only-other-resources", "alice", "GET /v1/orders", 403),
    ("only-other-resources", "bob", "POST /v1/orders", 403),
]


@pytest.fixture
def orders(stack_files: Any) -> Any:
    """``orders(access_policy, **auth)``: the path of a run config serving the
    orders API with :data:`USERS`' static tokens and ``access_policy``."""
    write = stack_files.serve_api("orders", "Orders", API, IMPL)

    def config(access_policy: list[dict[str, Any]] | None, **auth: Any) -> str:
        tokens = [
            {"token": token, "principal": name, "scopes": scopes, "attributes": attributes}
            for name, (token, scopes, attributes) in USERS.items()
        ]
        section: dict[str, Any] = {"tokens": tokens, **auth}
        if access_policy is not None:
            section["access_policy"] = access_policy
        return write(server={"auth": section})

    return config


def call(client: Any, user: str | None, route: str) -> Any:
    method, path, body = request_of(route)
    headers = {"Authorization": f"Bearer {USERS[user][0]}"} if user else {}
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(("policy", "user", "route", "status"), DECISIONS)
def test_rules_decide_each_route(orders, make_app, policy, user, route, status):
    client = make_app(orders(POLICIES[policy])).test_client()
    response = call(client, user, route)
    assert response.status_code == status, response.json
    if status == 403:
        method = route.split(" ")[0]
        action = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update",
                  "DELETE": "delete"}[method]
        assert response.json["detail"].startswith(f"Permission denied: User '{user}'")
        assert f"cannot perform action '{action}' on resource 'orders::" in response.json["detail"]


def test_the_denial_reads_as_llama_stacks(orders, make_app):
    client = make_app(orders(POLICIES["docstring-examples"])).test_client()
    response = call(client, "bob", "POST /v1/orders")
    assert response.status_code == 403
    assert response.json == {
        "detail": "Permission denied: User 'bob' (attributes: roles=['user'], teams=['blue']) "
        "cannot perform action 'create' on resource 'orders::create_order'"
    }
    response = call(client, "carol", "GET /v1/orders/ping")
    assert response.json == {
        "detail": "Permission denied: User 'carol' cannot perform action 'read' "
        "on resource 'orders::ping'"
    }


FORBID_ALL = [{"forbid": {"actions": list(ACTIONS)}}]


def test_public_routes_builtins_and_public_paths_are_not_checked(orders, make_app):
    client = make_app(orders(FORBID_ALL, public=["/v1/orders/ping", "/v1/health"])).test_client()
    assert client.get("/v1/orders/status").json == "up"  # @webmethod(public=True)
    assert client.get("/v1/orders/ping").json == "pong"  # server.auth.public
    assert client.get("/v1/health").status_code == 200
    alice = {"Authorization": "Bearer tok-alice"}
    assert client.get("/v1/version", headers=alice).status_code == 200
    assert client.get("/v1/providers", headers=alice).status_code == 200
    assert client.get("/v1/orders", headers=alice).status_code == 403
    assert client.get("/v1/orders").status_code == 401  # authentication comes first
    assert client.open("/v1/orders", method="OPTIONS").status_code == 200
    assert client.get("/v1/nowhere", headers=alice).status_code == 404


@pytest.mark.parametrize(
    ("policy", "user", "status", "detail"),
    [
        (FORBID_ALL, "alice", 403, "Permission denied: User 'alice'"),
        (FORBID_ALL, "bob", 403, "Permission denied: scope 'orders.audit' required"),
        ([{"permit": {"actions": ["read"]}}], "bob", 403,
         "Permission denied: scope 'orders.audit' required"),
        ([{"permit": {"actions": ["read"]}}], "carol", 200, None),
        ([{"permit": {"actions": ["read"]}, "when": "user with auditor in roles"}], "carol", 403,
         "Permission denied: User 'carol'"),
    ],
    ids=["policy-denies", "scope-first", "scope-denies", "both-pass", "policy-denies-scoped"],
)
def test_required_scope_and_the_policy_must_both_pass(orders, make_app, policy, user, status, detail):
    client = make_app(orders(policy)).test_client()
    response = call(client, user, "GET /v1/orders/audit")
    assert response.status_code == status, response.json
    if detail:
        assert response.json["detail"].startswith(detail)


@pytest.mark.parametrize("policy", [None, []], ids=["absent", "empty"])
def test_without_rules_every_authenticated_user_may_do_everything(orders, make_app, policy):
    client = make_app(orders(policy)).test_client()
    for user, route in itertools.product(USERS, [r for _, _, r, _ in DECISIONS]):
        assert call(client, user, route).status_code == 200, (user, route)


def test_without_auth_there_is_no_policy_check(stack_files, make_app):
    write = stack_files.serve_api("orders", "Orders", API, IMPL)
    client = make_app(write()).test_client()
    assert client.post("/v1/orders", json={"item": "x"}).status_code == 200
    assert client.delete("/v1/orders/1").status_code == 200


def test_a_factory_that_takes_policy_gets_the_parsed_rules(orders, make_app):
    rules = POLICIES["owner-conditions"]
    app = make_app(orders(rules))
    [provider] = app.extensions["stackflask"].providers
    assert provider.impl.policy == list(parse_rules(rules))
    assert all(isinstance(rule, AccessRule) for rule in provider.impl.policy)
    first = provider.impl.policy[1]
    assert first.permit == Scope(("create",))
    assert [str(c) for c in first.when] == ["user is not owner", "user with red in teams"]


def test_stackflask_run_applies_the_policy(orders, start, stack_files):
    port = free_port()
    server = start(
        [script("stackflask"), "run", "--config",
         orders(POLICIES["docstring-examples"], public=["/v1/health"]),
         "--port", str(port)],
        port,
        env=server_env([stack_files.pkgs]),
    )
    bob = {"Authorization": "Bearer tok-bob"}
    listed = requests.get(server.url("/v1/orders"), headers=bob, timeout=10)
    assert (listed.status_code, listed.json()) == (200, ["o1"])
    denied = requests.post(server.url("/v1/orders"), json={"item": "x"}, headers=bob, timeout=10)
    assert denied.status_code == 403
    assert denied.headers["Content-Type"] == "application/json"
    assert denied.json()["detail"].endswith(
        "cannot perform action 'create' on resource 'orders::create_order'"
    )


# -- parsing: startup errors name the rule's index and the field ---------------

KNOWN = (
    "(known: user is owner; user is not owner; user with <value> in <attribute>; "
    "user with <value> not in <attribute>; user in owners <attribute>; "
    "user not in owners <attribute>)"
)
AT = "<run config>: server.auth.access_policy"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"permit": {"actions": ["read"]}}, {"permit": {"actions": ["read"]}},
          {"permit": {"actions": ["read"]}, "when": "user in owner roles"}],
         [f"{AT}[2].when: unknown condition 'user in owner roles' {KNOWN}"]),
        ([{"permit": {"actions": ["read"]}, "unless": ["user is owner", "user is the owner"]}],
         [f"{AT}[0].unless: unknown condition 'user is the owner' {KNOWN}"]),
        ([{"permit": {"actions": ["write", "read", "execute"]}}],
         [f"{AT}[0].permit.actions: unknown action 'write' (known: create, read, update, delete)",
          f"{AT}[0].permit.actions: unknown action 'execute' (known: create, read, update, delete)"]),
        ([{"forbid": {"actions": []}}],
         [f"{AT}[0].forbid.actions: expected a non-empty list of create, read, update, delete"]),
        ([{"forbid": {"resource": "orders::*"}}],
         [f"{AT}[0].forbid.actions: required: a list of create, read, update, delete"]),
        ([{"permit": {"actions": ["read"], "resources": "orders::*"}}],
         [f"{AT}[0].permit.resources: unknown field (known: principal, actions, resource)"]),
        ([{"permit": {"actions": ["read"], "principal": 7}}],
         [f"{AT}[0].permit.principal: expected a string, got int"]),
        ([{"permit": ["read"]}],
         [f"{AT}[0].permit: expected a mapping of principal, actions, resource, got list"]),
        ([{"permit": {"actions": ["read"]}, "whenn": "user is owner"}],
         [f"{AT}[0].whenn: unknown field (known: permit, forbid, when, unless, description)"]),
        ([{"when": "user is owner"}],
         [f"{AT}[0]: give exactly one of 'permit' and 'forbid'"]),
        ([{"permit": {"actions": ["read"]}, "forbid": {"actions": ["read"]}}],
         [f"{AT}[0]: give exactly one of 'permit' and 'forbid'"]),
        ([{"permit": {"actions": ["read"]}, "when": "user is owner", "unless": "user is owner"}],
         [f"{AT}[0]: 'when' and 'unless' are mutually exclusive: give one"]),
        ([{"permit": {"actions": ["read"]}, "when": []}],
         [f"{AT}[0].when: expected a condition or a non-empty list of conditions, got []"]),
        ([{"permit": {"actions": ["read"]}, "description": 3}],
         [f"{AT}[0].description: expected a string, got int"]),
        (["permit read"], [f"{AT}[0]: Not a valid mapping type."]),
        ({"permit": {"actions": ["read"]}}, [f"{AT}: Not a valid list."]),
    ],
    ids=["condition", "condition-in-list", "actions", "no-actions", "actions-required",
         "scope-key", "principal-type", "scope-type", "rule-key", "no-effect", "both-effects",
         "when-and-unless", "empty-when", "description", "not-a-mapping", "not-a-list"],
)
def test_invalid_rules_are_startup_errors(rules, expected):
    config = {"server": {"auth": {"tokens": [{"token": "t", "principal": "p"}],
                                  "access_policy": rules}}}
    with pytest.raises(StartupError) as info:
        load_run_config(config)
    assert info.value.problems == expected


def test_every_problem_of_every_rule_is_listed(orders, make_app):
    rules = [
        {"permit": {"actions": ["read"]}},
        {"permit": {"actions": "read", "principal": ["a"]}, "when": "user in owner roles"},
        {"forbid": {"actions": ["destroy"]}, "unless": "user with admin in"},
    ]
    config = orders(rules)
    with pytest.raises(StartupError) as info:
        make_app(config)
    assert info.value.problems == [
        f"{config}: server.auth.access_policy[1].permit.principal: expected a string, got list",
        f"{config}: server.auth.access_policy[1].when: unknown condition 'user in owner roles' {KNOWN}",
        (f"{config}: server.auth.access_policy[2].forbid.actions: unknown action 'destroy' "
         "(known: create, read, update, delete)"),
        f"{config}: server.auth.access_policy[2].unless: unknown condition 'user with admin in' {KNOWN}",
    ]


@pytest.mark.parametrize(
    ("text", "condition"),
    [
        ("user is owner", Condition("user is owner")),
        ("user   is not\towner", Condition("user is not owner")),
        ("user with admin in roles", Condition("user with <value> in <attribute>", "roles", "admin")),
        ("user with default not in namespaces",
         Condition("user with <value> not in <attribute>", "namespaces", "default")),
        ("user in owners teams", Condition("user in owners <attribute>", "teams")),
        ("user not in owners projects", Condition("user not in owners <attribute>", "projects")),
    ],
)
def test_conditions_parse_as_llama_stack_words_them(text, condition):
    assert parse_condition(text) == condition
    assert parse_condition(str(condition)) == condition


def test_a_single_action_and_a_single_condition_are_lists_of_one():
    [rule] = parse_rules([{"forbid": {"actions": "delete"}, "unless": "user with admin in roles"}])
    assert rule == AccessRule(
        forbid=Scope(("delete",)),
        unless=(Condition("user with <value> in <attribute>", "roles", "admin"),),
    )


# -- the decision on owned resources, as Llama Stack's own tests have it -------


@dataclass(frozen=True)
class User:
    name: str
    attributes: dict[str, list[str]] = field(default_factory=dict)


def rules(text: str) -> tuple[AccessRule, ...]:
    return parse_rules(yaml.safe_load(text))


OWNER = User("testuser", {"namespaces": ["foo"]})


def test_permit_when():
    policy = rules("""
        - permit:
            principal: user-1
            actions: [read]
          when: user in owners namespaces
    """)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["foo"]}), OWNER)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["bar"]}), OWNER)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-2", {"namespaces": ["foo"]}), OWNER)


def test_permit_unless():
    policy = rules("""
        - permit:
            principal: user-1
            actions: [read]
            resource: model::*
          unless:
            - user not in owners namespaces
            - user in owners teams
    """)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["foo"]}), OWNER)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["bar"]}), OWNER)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-2", {"namespaces": ["foo"]}), OWNER)


def test_forbid_when():
    policy = rules("""
        - forbid:
            principal: user-1
            actions: [read]
          when:
            user in owners namespaces
        - permit:
            actions: [read]
    """)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["foo"]}), OWNER)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["bar"]}), OWNER)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-2", {"namespaces": ["foo"]}), OWNER)


def test_forbid_unless():
    policy = rules("""
        - forbid:
            principal: user-1
            actions: [read]
          unless:
            user in owners namespaces
        - permit:
            actions: [read]
    """)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["foo"]}), OWNER)
    assert not is_action_allowed(policy, "read", "model::mymodel", User("user-1", {"namespaces": ["bar"]}), OWNER)
    assert is_action_allowed(policy, "read", "model::mymodel", User("user-2", {"namespaces": ["foo"]}), OWNER)


def test_the_default_policy_matches_the_owners_attributes():
    owner = User("testuser", {"roles": ["data-scientist"], "teams": ["ml-team"]})
    assert is_action_allowed([], "read", "model::m", User("u", {"roles": ["data-scientist"], "teams": ["ml-team"]}), owner)
    assert not is_action_allowed([], "read", "model::m", User("u", {"roles": ["data-scientist"], "teams": ["x"]}), owner)
    assert not is_action_allowed([], "read", "model::m", User("u"), owner)
    assert is_action_allowed([], "read", "model::m", User("u"), User("testuser"))
    assert is_action_allowed([], "delete", "model::m", User("u"))
    assert is_action_allowed(parse_rules(FORBID_ALL), "read", "model::m", None)


def test_user_is_owner_and_resource_wildcards():
    policy = rules("""
        - permit:
            actions: [delete]
            resource: model::*
          when: user is owner
        - permit:
            actions: [read]
            resource: model::public
    """)
    assert is_action_allowed(policy, "delete", "model::m", User("ann"), User("ann"))
    assert not is_action_allowed(policy, "delete", "model::m", User("ben"), User("ann"))
    assert not is_action_allowed(policy, "delete", "models::m", User("ann"), User("ann"))
    assert is_action_allowed(policy, "read", "model::public", User("ben"))
    assert not is_action_allowed(policy, "read", "model::publication", User("ben"))


# -- the compiled route check decides as the general decision does -------------

CONDITION_TEXTS = [
    "user is owner", "user is not owner", "user in owners roles", "user not in owners teams",
    "user with admin in roles", "user with red not in teams",
]
SAMPLE_USERS = [User(name, attributes) for name, (_, _, attributes) in USERS.items()]


def some_rules() -> list[AccessRule]:
    """Rules of every shape: each effect, with and without principal and
    resource, and every condition, alone or paired, under ``when`` and ``unless``."""
    out = []
    condition_sets: list[tuple[str, ...]] = [()]
    condition_sets += [(c,) for c in CONDITION_TEXTS]
    condition_sets += list(itertools.combinations(CONDITION_TEXTS, 2))
    for effect, principal, resource, conditions, kind in itertools.product(
        ("permit", "forbid"), (None, "bob"), (None, "orders::*", "orders::ping", "model::*"),
        condition_sets, ("when", "unless"),
    ):
        if not conditions and kind == "unless":
            continue
        scope: dict[str, Any] = {"actions": ["read", "create"]}
        if principal:
            scope["principal"] = principal
        if resource:
            scope["resource"] = resource
        rule: dict[str, Any] = {effect: scope}
        if conditions:
            rule[kind] = list(conditions)
        out.append(parse_rules([rule])[0])
    return out


def test_the_compiled_check_agrees_with_the_general_decision():
    pool = some_rules()
    routes = {"orders.ping": ("GET", "orders::ping"), "orders.create_order": ("POST", "orders::create_order"),
              "orders.delete_order": ("DELETE", "orders::delete_order")}
    checked = 0
    for size in (1, 2, 3):
        for offset in range(0, len(pool), 3):
            policy = [pool[(offset + i * 131) % len(pool)] for i in range(size)]
            compiled = RoutePolicy(policy, routes)
            for endpoint, (method, resource) in routes.items():
                action = {"GET": "read", "POST": "create", "DELETE": "delete"}[method]
                for user in SAMPLE_USERS:
                    expected = is_action_allowed(policy, action, resource, user)
                    denial = compiled.denial(method, endpoint, "/v1/x", user)
                    assert (denial is None) == expected, (policy, endpoint, user)
                    checked += 1
    assert checked > 8000


def test_an_unconditional_rule_ends_the_checks_of_a_route():
    policy = parse_rules([
        {"permit": {"actions": ["read"], "principal": "bob"}},
        {"forbid": {"actions": ["read"], "resource": "model::*"}},
        {"permit": {"actions": ["read"]}, "when": "user in owners roles"},
        {"forbid": {"actions": ["read"]}},
    ])
    compiled = RoutePolicy(policy, {"orders.ping": ("GET", "orders::ping")})
    checks = compiled.targets["orders.ping"].checks
    assert [(c.permit, c.principal, c.conditions) for c in checks] == [
        (True, "bob", ()), (True, None, ()),
    ]


def test_a_checked_route_without_a_user_is_denied():
    """Authentication always names the user of a checked route; if it did not,
    the check fails closed instead of taking it for "no authentication"."""
    compiled = RoutePolicy(parse_rules([{"permit": {"actions": ["read"]}}]),
                           {"orders.ping": ("GET", "orders::ping")}, ["/v1/orders/ping"])
    assert compiled.denial("GET", "orders.ping", "/v1/orders/all", None) == (
        "Permission denied: Insufficient permissions"
    )
    assert compiled.denial("GET", "orders.ping", "/v1/orders/ping", None) is None
    assert compiled.denial("OPTIONS", "orders.ping", "/v1/orders/all", None) is None
    assert compiled.denial("GET", None, "/v1/nowhere", None) is None
