"""Log levels from the environment, the access log and request ids."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stackflask.log import (
    SERVER_LOGGERS,
    RequestIdFilter,
    configure_logging,
    log_raised,
    make_handler,
    parse_levels,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all=debug", {"stackflask": logging.DEBUG}),
        ("request=warning,resolver=debug", {
            "stackflask.request": logging.WARNING, "stackflask.resolver": logging.DEBUG}),
        ("my_provider=info", {"my_provider": logging.INFO}),
        (" all = Error , ", {"stackflask": logging.ERROR}),
        ("", {}),
    ],
)
def test_parse_levels(spec, expected):
    assert parse_levels(spec) == expected


@pytest.mark.parametrize("spec", ["all", "all=loud", "=debug=x"])
def test_parse_levels_rejects(spec):
    with pytest.raises(ValueError, match="is not category=level"):
        parse_levels(spec)


@pytest.mark.parametrize("variable", ["STACKFLASK_LOGGING", "LLAMA_STACK_LOGGING"])
def test_environment_sets_levels(variable, monkeypatch, make_app):
    monkeypatch.delenv("STACKFLASK_LOGGING", raising=False)
    monkeypatch.delenv("LLAMA_STACK_LOGGING", raising=False)
    logger = logging.getLogger("stackflask")
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setenv(variable, "all=debug")
    make_app()
    assert logger.level == logging.DEBUG


def test_one_access_line_per_request_with_its_id(client, caplog):
    caplog.set_level(logging.INFO, logger="stackflask.request")
    response = client.get("/v1/weather/locations?x=1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    lines = [r for r in caplog.records if r.name == "stackflask.request"]
    assert len(lines) == 1
    message = lines[0].getMessage()
    assert '"GET /v1/weather/locations?x=1" 200' in message
    assert lines[0].request_id == "abc-123"


@pytest.mark.parametrize("sent", ["", "bad\x01id", "x" * 200, "spa ce"])
def test_unusable_request_ids_are_replaced(client, sent):
    response = client.get("/v1/health", headers={"X-Request-ID": sent})
    rid = response.headers["X-Request-ID"]
    assert rid != sent and len(rid) == 32


PROVIDER_LOGGING_API = '''
from typing import Protocol

from stackflask import Api, InlineProviderSpec, webmethod


def available_providers():
    return [InlineProviderSpec(api=Api.chatty, provider_type="inline::chatty",
                               module="chatty_impl_logging")]


class Chatty(Protocol):
    @webmethod(route="/chatty", method="GET")
    async def talk(self) -> dict[str, str]: ...
'''

PROVIDER_LOGGING_IMPL = '''
import logging

log = logging.getLogger("chatty_provider")


class Chatty:
    async def talk(self):
        log.info("said hello")
        return {"said": "hello"}


def get_provider_impl(config, deps):
    return Chatty()
'''


def test_json_lines_carry_the_request_id_from_provider_code(stack_files, make_app):
    stack_files.module("chatty_api_logging", PROVIDER_LOGGING_API)
    stack_files.module("chatty_impl_logging", PROVIDER_LOGGING_IMPL)
    stack_files.api_spec("chatty.yaml", {
        "module": "chatty_api_logging", "name": "chatty", "protocol": "Chatty"})
    app = make_app(str(stack_files.run_config({
        "providers": {"chatty": [{"provider_id": "c", "provider_type": "inline::chatty"}]}})))
    stream = io.StringIO()
    handler = make_handler("json")
    handler.setStream(stream)
    logger = logging.getLogger("chatty_provider")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app.test_client().get("/v1/chatty", headers={"X-Request-ID": "req-42"})
        app.test_client().get("/v1/chatty", headers={"X-Request-ID": "req-43"})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e["request_id"]) for e in lines] == [
        ("said hello", "req-42"), ("said hello", "req-43")]
    assert set(lines[0]) == {"time", "level", "logger", "request_id", "message"}


def test_outside_a_request_the_id_is_a_dash():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    RequestIdFilter().filter(record)
    assert record.request_id == "-"


@pytest.mark.parametrize("name", SERVER_LOGGERS)
def test_a_servers_line_for_an_exception_stackflask_logged_is_dropped(name, caplog):
    configure_logging()
    logged, other = RuntimeError("logged"), RuntimeError("other")
    log_raised(logging.getLogger("stackflask.request"), logged, "app.method failed mid-body")
    server = logging.getLogger(name)
    for exc in (logged, other):
        try:
            raise exc
        except RuntimeError:
            server.exception("Exception while serving /path")
    server.warning("a line of its own")
    assert [(r.name, r.getMessage(), r.exc_info and r.exc_info[1]) for r in caplog.records] == [
        ("stackflask.request", "app.method failed mid-body", logged),
        (name, "Exception while serving /path", other),
        (name, "a line of its own", None),
    ]
