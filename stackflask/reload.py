"""``stackflask run --reload``: serve in a child process, restarted when a source changes.

Run time of the development server. The supervisor runs the same command line
without ``--reload`` as a child process, and watches with ``watchfiles`` (the
``stackflask[reload]`` extra) the run config, every file under
``external_apis_dir`` and ``external_providers_dir``, and the packages of every
API and provider module. On a change it stops the child (SIGTERM; SIGKILL past
the child's own shutdown bound) and starts another, which runs every startup
check again: a configuration that cannot be served prints its ``error:`` lines
and the supervisor waits for the next change. SIGTERM or SIGINT stops the child,
then the supervisor, with exit code 0.

What to watch is read from the files, importing nothing, so that a child that
fails to start leaves them watched; a child that starts adds the packages of
the modules it loaded (a provider declared by an API's ``available_providers()``
is known only once that module runs), written to a pipe the supervisor gives it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .config import RunConfig, ServerConfig, load_run_config
from .factory import resolve_config
from .log import configure_logging
from .problems import Problems, StartupError
from .registry import Registry, load_api_specs, registry_files

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("stackflask.reload")

#: The write end of the pipe on which a child tells its supervisor what it loaded.
REPORT_FD_ENV = "STACKFLASK_RELOAD_FD"
#: In a watched package or spec folder, the files whose change restarts the server
#: (a new folder does too: it is watched from the restart on).
SOURCE_SUFFIXES = (".py", ".yaml", ".yml")
#: Seconds a child gets to stop beyond its own bound (``server.shutdown_grace``
#: plus ``server.shutdown_timeout`` plus a second) before it is killed.
STOP_MARGIN = 2.0


@dataclass
class Sources:
    """What to watch: single files, and folders watched with their subfolders."""

    files: set[Path] = field(default_factory=set)
    trees: set[Path] = field(default_factory=set)

    def add(self, path: Path) -> None:
        """Watch ``path``: a folder and everything under it, else a file (one
        that does not exist yet counts once it is created)."""
        path = path.resolve()
        if path.is_dir():
            self.trees.add(path)
        else:
            self.files.add(path)

    def covers(self, path: Path) -> bool:
        path = path.resolve()
        return path in self.files or any(
            path == tree or tree in path.parents for tree in self.trees
        )

    def shown(self) -> list[str]:
        """The files, and the trees (ending in ``/``), as log lines show them."""
        return sorted(
            [_short(str(path)) for path in self.files]
            + [_short(str(tree)) + os.sep for tree in self.trees]
        )


class SourceFilter:
    """The folders to watch (each without its subfolders: :attr:`folders` lists
    them all) and, as a ``watchfiles`` filter, the changes that count: a watched
    file, or a source in a watched tree.

    Watching folder by folder keeps a run config's folder (a home folder,
    perhaps) from being watched whole, and sees a file an editor replaces.
    """

    def __init__(self, sources: Sources) -> None:
        self.files = {str(path) for path in sources.files}
        self.tree_folders = {folder for tree in sources.trees for folder in _walk(tree)}
        parents = {str(path.parent) for path in sources.files if path.parent.is_dir()}
        self.folders = sorted(self.tree_folders | parents)

    def __call__(self, change: Any, path: str) -> bool:
        if path in self.files:
            return True
        folder, name = os.path.split(path)
        if folder not in self.tree_folders or _ignored(name):
            return False
        return name.endswith(SOURCE_SUFFIXES) or os.path.isdir(path)


def _ignored(name: str) -> bool:
    # Editors' lock and swap files are hidden; __pycache__ is written by the child.
    return name.startswith(".") or name == "__pycache__"


def _walk(tree: Path) -> Iterator[str]:
    for folder, subfolders, _ in os.walk(tree):
        subfolders[:] = [name for name in subfolders if not _ignored(name)]
        yield folder


def module_sources(names: Iterable[str]) -> list[Path]:
    """The folders (or the file, for a single module) of the top-level packages
    of the modules ``names``, found without importing anything."""
    found: list[Path] = []
    for top in dict.fromkeys(name.partition(".")[0] for name in names):
        try:
            spec = importlib.util.find_spec(top) if top else None
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            found += [Path(location) for location in spec.submodule_search_locations]
        elif spec.has_location and spec.origin:
            found.append(Path(spec.origin))
    return found


def config_sources(config_path: Path) -> tuple[Sources, RunConfig | None]:
    """The run config, its ``external_apis_dir`` and ``external_providers_dir``,
    and the packages of the modules their files name; the run config too, when
    it is valid. Reads the files only: the child reports their problems."""
    sources = Sources()
    sources.add(config_path)
    try:
        run_config = load_run_config(config_path)
    except StartupError:
        return sources, None
    for folder in (run_config.external_apis_dir, run_config.external_providers_dir):
        if folder is not None:
            sources.add(folder)
    problems = Problems()
    specs = load_api_specs(run_config.external_apis_dir, run_config.source, problems)
    registry = Registry()
    registry_files(run_config, {spec.name for spec in specs} | problems.broken, registry, problems)
    names = [spec.module for spec in specs]
    for entries in run_config.providers.values():
        for entry in entries:
            if entry.module:
                names.append(entry.module)
            record = registry.providers.get(entry.api, {}).get(entry.provider_type)
            if record is not None:
                names.append(record.spec.module)
    for path in module_sources(names):
        sources.add(path)
    return sources, run_config


def report_sources(app: Flask) -> None:
    """In a child of ``stackflask run --reload``, send the supervisor the
    packages of the modules ``app`` loaded; in any other process, nothing."""
    fd = os.environ.pop(REPORT_FD_ENV, None)
    if fd is None:
        return
    stack = app.extensions["stackflask"]
    names = [loaded.spec.module for loaded in stack.registry.apis.values()]
    names += [provider.spec.module for provider in stack.providers]
    names += [
        entry.module
        for entries in stack.config.providers.values()
        for entry in entries
        if entry.module
    ]
    with open(int(fd), "w", encoding="utf-8") as pipe:
        pipe.writelines(f"{path}\n" for path in module_sources(names))


class Child:
    """One ``stackflask run`` process, and the thread that passes what it
    loaded to ``on_report`` and logs its exit when nobody stopped it."""

    def __init__(self, command: list[str], on_report: Callable[[list[Path]], None]) -> None:
        self.stopping = False
        self._on_report = on_report
        read, write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                command, env={**os.environ, REPORT_FD_ENV: str(write)}, pass_fds=(write,)
            )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        log.info("started the server (process %d)", self.proc.pid)
        self._thread = threading.Thread(
            target=self._listen, args=(read,), name="stackflask-reload", daemon=True
        )
        self._thread.start()

    def _listen(self, read: int) -> None:
        # The pipe ends when the child has written its report, or has exited.
        with open(read, encoding="utf-8") as pipe:
            report = pipe.read()
        if report:
            self._on_report([Path(line) for line in report.splitlines()])
        code = self.proc.wait()
        if not self.stopping:
            log.log(
                logging.ERROR if code else logging.INFO,
                "the server exited with code %d; waiting for a change to start it again",
                code,
            )

    def stop(self, timeout: float) -> None:
        """SIGTERM; SIGKILL if it is still running after ``timeout`` seconds."""
        self.stopping = True
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the server did not stop within %g s; killing it", timeout)
            self.proc.kill()
            self.proc.wait()
        self._thread.join()


#: ``watchfiles.watch``: folders -> sets of (change, path).
Watch = Callable[..., Iterable[set[tuple[Any, str]]]]


class Reloader:
    """Runs ``command`` as a :class:`Child` and restarts it on every change of
    the sources of the run config at ``config_path``, until SIGTERM or SIGINT."""

    def __init__(self, watch: Watch, command: list[str], config_path: Path) -> None:
        self.watch = watch
        self.command = command
        self.config_path = config_path
        self.stopping = threading.Event()
        #: Set by a stop signal, or by a report naming sources not watched yet:
        #: watching starts over.
        self.wake = threading.Event()
        #: What the last child that started reported; kept while later ones fail.
        self.reported: list[Path] = []
        self.sources = Sources()
        self._lock = threading.Lock()
        self._shown: list[str] = []
        self.stop_timeout = _stop_timeout(ServerConfig())

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        while not self.stopping.is_set():
            child = Child(self.command, self._report)
            try:
                changed = self.wait_for_change()
            finally:
                child.stop(self.stop_timeout)
            if changed:
                shown = ", ".join(sorted(_short(path) for path in changed))
                log.info("changed: %s; restarting the server", shown)
        log.info("stopped")

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping.set()
        self.wake.set()

    def _report(self, paths: list[Path]) -> None:
        # Watching starts over only for sources not watched yet: a change made
        # while it does is missed, and the child has already read its files.
        with self._lock:
            self.reported = paths
            if not all(self.sources.covers(path) for path in paths):
                self.wake.set()

    def wait_for_change(self) -> set[str]:
        """The paths that changed, or none when stopping."""
        while not self.stopping.is_set():
            with self._lock:
                self.wake.clear()
                sources, run_config = config_sources(self.config_path)
                for path in self.reported:
                    sources.add(path)
                self.sources = sources
            if run_config is not None:
                self.stop_timeout = _stop_timeout(run_config.server)
            if sources.shown() != self._shown:
                self._shown = sources.shown()
                log.info("watching %s", ", ".join(self._shown))
            source_filter = SourceFilter(sources)
            try:
                for changes in self.watch(
                    *source_filter.folders, watch_filter=source_filter, stop_event=self.wake,
                    recursive=False, raise_interrupt=False, ignore_permission_denied=True,
                ):
                    return {path for _, path in changes}
            except FileNotFoundError:
                continue  # a folder went away after the walk: look again
        return set()


def _stop_timeout(server: ServerConfig) -> float:
    return server.shutdown_grace + server.shutdown_timeout + 1 + STOP_MARGIN


def _short(path: str) -> str:
    """``path`` relative to the working folder when it is under it."""
    cwd = os.getcwd()
    return os.path.relpath(path) if path.startswith(cwd + os.sep) else path


def child_command(argv: list[str]) -> list[str]:
    """The interpreter's command line ``argv`` (``sys.orig_argv``) without
    ``--reload``, run by this interpreter: ``stackflask run`` as it was typed,
    with the same module search path."""
    return [sys.executable, *(arg for arg in argv[1:] if arg != "--reload")]


def supervise(config: str | None) -> NoReturn:
    """Serve as ``stackflask run`` would, in a child process restarted on every
    change, until SIGTERM or SIGINT; then exit 0.

    Exits 1 with one ``error:`` line when ``watchfiles`` is not installed or
    there is no run config to watch.
    """
    try:
        from watchfiles import watch
    except ImportError:
        _fail(["--reload needs watchfiles, which is not installed: pip install 'stackflask[reload]'"])
    try:
        source = resolve_config(config)
    except StartupError as exc:
        _fail(exc.problems)
    assert not isinstance(source, Mapping)  # a path: config comes from the command line
    # The child logs the problems of the files; the supervisor reads them only
    # to know what to watch.
    for name in ("stackflask.config", "stackflask.registry"):
        logging.getLogger(name).addFilter(lambda record: False)
    configure_logging()
    config_path = Path(os.path.expanduser(os.fspath(source)))
    Reloader(watch, child_command(sys.orig_argv), config_path).run()
    sys.exit(0)


def _fail(problems: Iterable[str]) -> NoReturn:
    for line in problems:
        print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(1)
