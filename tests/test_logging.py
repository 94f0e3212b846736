"""Log levels from the environment, the access log and request ids."""

from __future__ import annotations

import logging

import pytest

from stackflask.log import parse_levels


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
