"""Test helpers for API and provider authors: an app from installed packages.

Test time. :func:`stack_app` builds a real app, the way ``stackflask run``
does, from an API package and a provider, with the provider's config given in
memory: the ``apis.d`` and ``providers.d`` files that the app needs are
written to a temporary folder, read at startup and removed before it returns.
:func:`stack_client` wraps it the way Flask's ``app.test_client()`` is used::

    from stackflask.testing import stack_client

    def test_hello():
        with stack_client(
            api="weather_api",
            protocol="WeatherApi",
            name="weather",
            provider="weather_kaze",
            provider_type="remote::kaze",
            config_class="weather_kaze.KazeConfig",
            config={"greeting": "Hi"},
        ) as client:
            assert client.get("/v1/weather/hello").json == {"message": "Hi, world!"}

As a pytest fixture (pytest-flask's ``client`` fixture works the same way when
an ``app`` fixture returns :func:`stack_app` and shuts it down after)::

    @pytest.fixture
    def client():
        with stack_client(api=..., protocol=..., name=..., provider_type=...) as client:
            yield client

Without ``provider``, the provider type must be one the API module's
``available_providers()`` lists. A provider written in the test module itself
(a stub of the Protocol with a ``get_provider_impl``) is ``provider=__name__``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from flask.testing import FlaskClient

from .factory import StackFlask, create_app

KINDS = ("inline", "remote")


def stack_app(
    *,
    api: str,
    protocol: str,
    name: str,
    provider_type: str,
    provider: str | None = None,
    config_class: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> StackFlask:
    """Build the app serving API ``name`` with one provider, in testing mode.

    :param api: the API's module, e.g. ``"weather_api"``.
    :param protocol: the Protocol class in that module, e.g. ``"WeatherApi"``.
    :param name: the API name, e.g. ``"weather"`` (routes are the Protocol's).
    :param provider_type: ``"remote::NAME"`` or ``"inline::NAME"``; its provider
        id is ``NAME``.
    :param provider: the provider's module, exposing ``get_adapter_impl`` (remote)
        or ``get_provider_impl`` (inline). ``None``: the API module's
        ``available_providers()`` must list ``provider_type``.
    :param config_class: the dotted path of the provider's config class; ``None``
        passes ``config`` to the factory as a dict.
    :param config: the provider's ``config`` mapping, as in a run config.

    Raises :class:`~stackflask.StartupError` listing every problem, as
    ``stackflask run`` would print them. Call
    ``app.extensions["stackflask"].shutdown()`` when done (or use
    :func:`stack_client`), so that providers' ``shutdown()`` runs.
    """
    kind, _, provider_id = provider_type.partition("::")
    if kind not in KINDS or not provider_id:
        raise ValueError(
            f"provider_type {provider_type!r} must be 'remote::NAME' or 'inline::NAME'"
        )
    run_config: dict[str, Any] = {
        "image_name": f"{name}-test",
        "apis": [name],
        "providers": {
            name: [
                {
                    "provider_id": provider_id,
                    "provider_type": provider_type,
                    "config": dict(config or {}),
                }
            ]
        },
    }
    with tempfile.TemporaryDirectory(prefix="stackflask-testing-") as folder:
        root = Path(folder)
        run_config["external_apis_dir"] = str(root / "apis.d")
        write_yaml(
            root / "apis.d" / f"{name}.yaml",
            {"module": api, "name": name, "protocol": protocol},
        )
        if provider is not None:
            run_config["external_providers_dir"] = str(root / "providers.d")
            write_yaml(
                root / "providers.d" / kind / name / f"{provider_id}.yaml",
                provider_file(kind, provider_id, provider, config_class or ""),
            )
        app = create_app(run_config)
    app.config["TESTING"] = True
    return app


@contextmanager
def stack_client(
    *,
    api: str,
    protocol: str,
    name: str,
    provider_type: str,
    provider: str | None = None,
    config_class: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Iterator[FlaskClient]:
    """A test client of :func:`stack_app` (same arguments); on exit, every
    provider's ``shutdown()`` is awaited."""
    app = stack_app(
        api=api,
        protocol=protocol,
        name=name,
        provider_type=provider_type,
        provider=provider,
        config_class=config_class,
        config=config,
    )
    try:
        yield app.test_client()
    finally:
        app.extensions["stackflask"].shutdown()


def provider_file(kind: str, provider_id: str, module: str, config_class: str) -> dict[str, Any]:
    """The ``providers.d`` file of a provider in ``module``."""
    if kind == "remote":
        return {
            "adapter": {
                "adapter_type": provider_id,
                "module": module,
                "config_class": config_class,
            }
        }
    return {"module": module, "config_class": config_class}


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
