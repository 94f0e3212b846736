"""gunicorn settings from the run config: the address to bind, TLS, and one CPU per worker.

Config time of the gunicorn master, before it loads the app::

    gunicorn -c python:stackflask.gunicorn_conf 'app:create_app()'

reads the run config as ``create_app()`` does (``STACKFLASK_CONFIG``, else the
embedded default) and sets ``bind`` from ``server.host`` and ``server.port``
(``-b`` on the command line wins) and, from ``server.tls_*``, ``certfile``,
``keyfile``, ``ca_certs`` and ``cert_reqs`` (client certificates required
when ``tls_cafile`` is given, as Llama Stack does). It marks the environment
(:data:`stackflask.tls.TLS_ENV`) so that the apps the workers build know that
gunicorn serves their TLS. A run config that cannot be read is one ``error:``
line per problem, and exit 1.

Its hooks: ``post_fork`` pins each worker, every thread of it, to a CPU of its
own as ``server.cpu_affinity`` says (:mod:`stackflask.affinity`: one process
per core, one event loop per process; ``all`` leaves the workers unpinned),
and ``child_exit``, when ``PROMETHEUS_MULTIPROC_DIR`` is set, tells
prometheus_client that a worker is gone, so that ``/metrics`` stops counting
its in-flight requests.

gunicorn applies every module-level name that is one of its settings; the
module holds those settings and gunicorn's hooks, nothing else.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any, NoReturn

from .affinity import Setting, candidates, parse_cpus
from .affinity import apply as apply_affinity
from .config import DEFAULT_HOST, DEFAULT_PORT, RunConfig, load_run_config
from .factory import resolve_config
from .problems import StartupError
from .tls import TLS_ENV, tls_mark


def _fail(problems: list[str]) -> NoReturn:
    for line in problems:
        print(f"error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _run_config() -> RunConfig:
    """The run config, its TLS files loaded once here so that a missing or
    unusable file is named now rather than by each worker as it fails to boot."""
    try:
        config = load_run_config(resolve_config(None))
        server = config.server
        if server.tls_certfile is not None and server.tls_keyfile is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(server.tls_certfile, server.tls_keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise StartupError([
                    f"{config.source}: server.tls_certfile, server.tls_keyfile: cannot load "
                    f"{os.fspath(server.tls_certfile)!r} with {os.fspath(server.tls_keyfile)!r}: "
                    f"{exc.strerror or exc}"
                ]) from None
            if server.tls_cafile is not None:
                try:
                    context.load_verify_locations(server.tls_cafile)
                except (OSError, ssl.SSLError) as exc:
                    raise StartupError([
                        f"{config.source}: server.tls_cafile: cannot load "
                        f"{os.fspath(server.tls_cafile)!r}: {exc.strerror or exc}"
                    ]) from None
    except StartupError as exc:
        _fail(exc.problems)
    return config


def _cpu_setting(config: RunConfig) -> Setting:
    """``server.cpu_affinity``, checked against the CPUs the master may use,
    which its workers inherit."""
    setting = parse_cpus(config.server.cpu_affinity)
    try:
        candidates(setting)
    except ValueError as exc:
        _fail([f"{config.source}: server.cpu_affinity: {exc}"])
    return setting


_config = _run_config()
_server = _config.server
_cpus = _cpu_setting(_config)
_cpus_where = f"{_config.source}: server.cpu_affinity"
_host = _server.host or DEFAULT_HOST
bind = [f"[{_host}]:{_server.port or DEFAULT_PORT}" if ":" in _host
        else f"{_host}:{_server.port or DEFAULT_PORT}"]

if _server.tls_certfile is not None and _server.tls_keyfile is not None:
    certfile = os.fspath(_server.tls_certfile)
    keyfile = os.fspath(_server.tls_keyfile)
    if _server.tls_cafile is not None:
        ca_certs = os.fspath(_server.tls_cafile)
        cert_reqs = ssl.CERT_REQUIRED
    # Read by create_app in each worker: gunicorn serves these files' TLS.
    os.environ[TLS_ENV] = tls_mark(_server)
else:
    os.environ.pop(TLS_ENV, None)


def post_fork(server: Any, worker: Any) -> None:
    """Pin the new worker to a CPU no other worker (or stackflask) has taken, if any."""
    def info(message: str, *args: Any) -> None:
        server.log.info("worker %s: " + message, worker.pid, *args)

    apply_affinity(_cpus, _cpus_where, info)


def child_exit(server: Any, worker: Any) -> None:
    """With prometheus_client's multiprocess mode, mark the worker's files dead."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
