"""The ``stackflask`` command (also ``python -m stackflask``).

Startup time. ``stackflask run`` builds the app and serves it with waitress;
SIGTERM and SIGINT stop the server and await every provider's ``shutdown()``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .affinity import Setting, parse_cpus
from .affinity import apply as apply_affinity
from .builtin import BUILTIN_ROUTES
from .config import DEFAULT_HOST, DEFAULT_PORT, RunConfig, load_run_config
from .docstrings import parse_docstring, plain_text
from .factory import CONFIG_ENV, create_app, load_registry, resolve_config
from .log import configure_logging, debug_enabled
from .problems import Problems, StartupError
from .registry import (
    ApiSpec,
    ProviderRecord,
    Registry,
    add_available_providers,
    load_api_specs,
    load_apis,
    registry_files,
)
from .resolver import served_apis
from .scaffold import new
from .tls import ServedBy

log = logging.getLogger("stackflask.server")

PORT_ENV = "STACKFLASK_PORT"
#: glibc's ``mallopt`` parameter, from ``<malloc.h>``.
M_MMAP_THRESHOLD = -3


def config_option(func: Any) -> Any:
    return click.option(
        "--config",
        "--yaml-config",
        "config",
        envvar=CONFIG_ENV,
        type=click.Path(dir_okay=False),
        help=f"Run config (YAML). Default: ${CONFIG_ENV}, else the embedded default.",
    )(func)


class SummaryGroup(click.Group):
    """A group whose ``--help`` lists each command with its whole first sentence,
    wrapped, where click would cut it at the column's width ("serves,...")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=SummaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stackflask", prog_name="stackflask")
def main() -> None:
    """Serve external APIs and their providers, described in YAML."""


def load_app(
    config: str | None, served_by: ServedBy, tracing: bool = False, metrics: bool = False
) -> Any:
    """The app for ``config``, or exit 1 printing one line per problem."""
    try:
        return create_app(config, tracing=tracing, metrics=metrics, served_by=served_by)
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
@click.option("--threads", type=click.IntRange(1),
              help="waitress worker threads (requests and open streams served at once). "
              "Default: server.threads, else 8.")
@click.option("--tracing", is_flag=True,
              help="OpenTelemetry spans, exported as the OTEL_* variables say "
              "(pip install 'stackflask[otel]'). Default: server.tracing.")
@click.option("--metrics", is_flag=True,
              help="Prometheus metrics on GET /metrics "
              "(pip install 'stackflask[metrics]'). Default: server.metrics.")
@click.option("--cpus",
              help="The CPU to run the whole process on: auto (one CPU no other stackflask "
              "has taken, if any), a list such as 1 or 0,2 (one of those), or all (no "
              "pinning). Default: server.cpu_affinity, else auto.")
@click.option("--reload", is_flag=True,
              help="Development: restart when the run config, a spec or the source of an "
              "API or provider changes (pip install 'stackflask[reload]').")
def run(
    config: str | None, host: str | None, port: int | None, threads: int | None, tracing: bool,
    metrics: bool, cpus: str | None, reload: bool,
) -> None:
    """Serve the run config with waitress."""
    setting: Setting | None = None
    if cpus is not None:
        try:
            setting = parse_cpus(cpus)
        except ValueError as exc:
            _fail([f"--cpus: {exc}"])
    if reload:
        from .reload import supervise

        supervise(config)
    from .reload import report_sources
    from .serve import serve

    return_large_blocks()
    configure_logging()
    app = load_app(config, "stackflask run", tracing, metrics)
    report_sources(app)
    stack = app.extensions["stackflask"]
    server_config = stack.config.server
    where = "--cpus" if setting is not None else f"{stack.config.source}: server.cpu_affinity"
    try:
        apply_affinity(setting or parse_cpus(server_config.cpu_affinity), where)
    except ValueError as exc:
        stack.shutdown()
        _fail([f"{where}: {exc}"])
    serve(
        app,
        host=host or server_config.host or DEFAULT_HOST,
        port=resolve_port(port, server_config.port),
        threads=threads or server_config.threads,
    )

def return_large_blocks() -> None:
    """Make glibc's malloc return every block of 128 KiB or more to the system
    when it is freed (``MALLOC_MMAP_THRESHOLD_=131072``).

    Otherwise, once such a block is freed, glibc raises the threshold up to
    32 MiB and keeps later blocks (a request's body, its text, its parsed
    lists) in the arena of each waitress thread: the memory of one large
    request is kept, eight threads over.
    """
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _fail(problems: Sequence[str]) -> NoReturn:
    for line in problems:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _registry(config: str | None) -> tuple[RunConfig, Registry, Problems]:
    """The run config and registry, as ``create_app`` reads them; exit 1 on a bad config."""
    configure_logging()
    try:
        return load_registry(config)
    except StartupError as exc:
        _fail(exc.problems)


def _files(config: str | None) -> tuple[RunConfig, list[ApiSpec], Registry, Problems]:
    """The run config, ``apis.d`` specs and ``providers.d`` specs, importing nothing."""
    configure_logging()
    try:
        run_config = load_run_config(resolve_config(config))
    except StartupError as exc:
        _fail(exc.problems)
    problems = Problems()
    specs = load_api_specs(run_config.external_apis_dir, run_config.source, problems)
    registry = Registry()
    registry_files(run_config, {s.name for s in specs} | problems.broken, registry, problems)
    return run_config, specs, registry, problems


@main.command()
@config_option
@click.option("--no-import", is_flag=True, help="Check the files only; import nothing.")
def validate(config: str | None, no_import: bool) -> None:
    """Load the whole configuration without serving; report every problem."""
    configure_logging()
    if no_import:
        problems = _files(config)[3]
        if problems:
            _fail(problems)
        click.echo("ok: the files are valid (nothing imported)")
        return
    app = load_app(config, "nobody")
    stack = app.extensions["stackflask"]
    stack.shutdown()
    click.echo(
        f"ok: {stack.config.source}: {len(stack.providers)} API(s), "
        f"{len(stack.routes)} route(s)"
    )


@main.command()
@config_option
@click.option("--install", is_flag=True, help="Run pip install in this environment.")
def deps(config: str | None, install: bool) -> None:
    """The pip requirements of everything the config serves, one per line."""
    run_config, spec_list, registry, problems = _files(config)
    if problems:
        _fail(problems)
    specs = {spec.name: spec for spec in spec_list}
    requirements: list[str] = []
    for name in served_apis(run_config):
        spec = specs.get(name)
        if spec is not None:
            requirements += spec.pip_packages
        for entry in run_config.providers.get(name, []):
            record = registry.providers.get(name, {}).get(entry.provider_type)
            if record is None:
                record = _provider_from_module(spec, entry.provider_type)
            if record is not None:
                requirements += record.spec.pip_packages
            else:
                click.echo(
                    f"warning: {run_config.source}: {entry.where}: the packages of "
                    f"{entry.provider_type!r} are not known until its API package is installed",
                    err=True,
                )
    requirements = list(dict.fromkeys(requirements))
    if install:
        if requirements:
            sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *requirements]))
        return
    for requirement in requirements:
        click.echo(requirement)


def _provider_from_module(spec: ApiSpec | None, provider_type: str) -> ProviderRecord | None:
    """The provider record ``available_providers()`` gives, if the module imports."""
    if spec is None:
        return None
    problems = Problems()
    apis = load_apis([spec], problems)
    if spec.name not in apis:
        return None
    registry = Registry(apis=apis)
    add_available_providers(registry, apis[spec.name])
    return registry.providers.get(spec.name, {}).get(provider_type)


@main.command()
@config_option
def routes(config: str | None) -> None:
    """Method, path, API, provider type and summary of every served route."""
    app = load_app(config, "nobody")
    stack = app.extensions["stackflask"]
    rows = [("METHOD", "PATH", "API", "PROVIDER", "SUMMARY")]
    for route in stack.routes:
        summary = plain_text(parse_docstring(route.endpoint.func.__doc__).summary)
        rows.append((route.method, route.path, route.api, route.provider_type, summary))
    rows += [(method, path, "-", "-", "built-in") for method, path in BUILTIN_ROUTES]
    _table(rows)
    stack.shutdown()


@main.command("list-apis")
@config_option
def list_apis(config: str | None) -> None:
    """Every registered API, where it came from, and whether it is served."""
    run_config, registry, problems = _registry(config)
    served = set(served_apis(run_config))
    rows = [("API", "SERVED", "ROUTES", "MODULE", "PROTOCOL", "SPEC FILE")]
    for name, loaded in registry.apis.items():
        rows.append((
            name, "yes" if name in served else "no", str(len(loaded.endpoints)),
            loaded.spec.module, loaded.spec.protocol, loaded.spec.source,
        ))
    _table(rows)
    if problems:
        _fail(problems)


@main.command("list-providers")
@config_option
@click.argument("api", required=False)
def list_providers(config: str | None, api: str | None) -> None:
    """Every provider type known for each API (or for API), and its source."""
    run_config, registry, problems = _registry(config)
    if api is not None and api not in registry.apis:
        known = ", ".join(registry.apis) or "none"
        raise click.UsageError(f"unknown API {api!r} (known: {known})")
    used = {(e.api, e.provider_type) for es in run_config.providers.values() for e in es}
    rows = [("API", "PROVIDER TYPE", "USED", "MODULE", "SOURCE")]
    for name, records in registry.providers.items():
        if api is not None and name != api:
            continue
        for provider_type, record in records.items():
            rows.append((
                name, provider_type, "yes" if (name, provider_type) in used else "no",
                record.spec.module, record.source,
            ))
    _table(rows)
    if problems:
        _fail(problems)


main.add_command(new)
