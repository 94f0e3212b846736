"""The ``stackflask`` command (also ``python -m stackflask``).

Startup time. ``stackflask run`` builds the app and serves it with waitress;
SIGTERM and SIGINT stop the server and await every provider's ``shutdown()``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click

from .config import DEFAULT_HOST, DEFAULT_PORT
from .factory import CONFIG_ENV, create_app
from .log import configure_logging, debug_enabled
from .problems import StartupError

log = logging.getLogger("stackflask.server")

PORT_ENV = "STACKFLASK_PORT"


def config_option(func: Any) -> Any:
    return click.option(
        "--config",
        "--yaml-config",
        "config",
        envvar=CONFIG_ENV,
        type=click.Path(dir_okay=False),
        help=f"Run config (YAML). Default: ${CONFIG_ENV}, else the embedded default.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stackflask", prog_name="stackflask")
def main() -> None:
    """Serve external APIs and their providers, described in YAML."""


def load_app(config: str | None) -> Any:
    """The app for ``config``, or exit 1 printing one line per problem."""
    try:
        return create_app(config)
    except StartupError as exc:
        if debug_enabled():
            log.debug("startup failed", exc_info=True)
        for line in exc.problems:
            click.echo(f"error: {line}", err=True)
        sys.exit(1)


def resolve_port(port: int | None, configured: int | None) -> int:
    """``--port``, then ``STACKFLASK_PORT``, then ``server.port``, then 8321."""
    if port is not None:
        return port
    env = os.environ.get(PORT_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise click.BadParameter(f"{PORT_ENV}={env!r} is not a port number") from None
        if not 0 <= value <= 65535:
            raise click.BadParameter(f"{PORT_ENV}={env!r} is not a port number")
        return value
    return configured if configured is not None else DEFAULT_PORT


@main.command()
@config_option
@click.option("--host", help="Interface to bind. Default: server.host, else 127.0.0.1.")
@click.option("--port", type=click.IntRange(0, 65535), help=f"Port. Default: ${PORT_ENV}, server.port, 8321.")
@click.option("--threads", type=click.IntRange(1), default=8, show_default=True,
              help="waitress worker threads (requests and open streams served at once).")
def run(config: str | None, host: str | None, port: int | None, threads: int) -> None:
    """Serve the run config with waitress."""
    from waitress.server import create_server

    configure_logging()
    app = load_app(config)
    stack = app.extensions["stackflask"]
    server_config = stack.config.server
    host = host or server_config.host or DEFAULT_HOST
    port = resolve_port(port, server_config.port)
    server = create_server(app, host=host, port=port, threads=threads, ident="stackflask")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound = server.effective_port  # type: ignore[union-attr]
    log.info("serving %s on http://%s:%s", stack.config.source, host, bound)
    click.echo(f"stackflask: serving on http://{host}:{bound}", err=True)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.close()
        stack.shutdown()
