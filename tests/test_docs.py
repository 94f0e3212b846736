"""The docs: every command they show runs, every startup error is explained.

Commands are shown in ```` ```console ```` blocks as ``$ command`` lines, each
followed by the output the doc shows for it, if any. Each block runs for real,
in order, in a sandbox made for its doc: a temporary ``HOME`` holding the files
of the README's walkthrough and the files the doc itself shows (fenced blocks
whose first line is ``# <path>``), ``~/src/stackflask`` standing for the user's
clone of this repository with the ``.venv`` of the README's first command, the
venv's scripts first on ``PATH``, and free loopback ports in place of the
documented ones. The docs of :data:`FROM_CLONE` say to run their commands from
the clone, the others from ``HOME``. Server commands (``stackflask run``, ``waitress-serve``, ``gunicorn``)
start in the background and are stopped by PID when the block ends; ``curl``
lines are sent with requests; anything else runs in bash. Documented output is
compared with what the command printed, with the sandbox's ``HOME`` shown as
``/home/you`` and ``...`` in a documented line matching any text. A command
whose output shows ``error:`` must fail; any other must succeed.

A block that cannot run here is preceded by ``<!-- not run: reason -->`` and
must be one of :data:`NOT_RUN`, so every exemption is deliberate.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import test_startup_errors
import yaml
from conftest import free_port

from stackflask.cli import main

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SHOWN_HOME = "/home/you"
READY_TIMEOUT = 20.0
COMMAND_TIMEOUT = 60.0

#: Docs whose commands run from the clone of this repository, where ``.venv`` is.
FROM_CLONE = {"README.md", "writing-an-api.md"}

#: Commands that cannot run on a test machine, each with why.
NOT_RUN = {
    "docker build -t weather-stack .": "no container runtime on test machines",
    "docker run --rm -p 8321:8321 weather-stack": "no container runtime on test machines",
}

FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
NOT_RUN_MARK = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*\Z")
SERVER = re.compile(
    r"(^|[\s/])(stackflask\s+run|stackflask\s+\S.*\srun|waitress-serve|gunicorn)(\s|$)"
)
PORT = re.compile(r"(?:127\.0\.0\.1:|localhost:|0\.0\.0\.0:|--port[ =]|_PORT=)(\d{2,5})\b")


# -- reading the docs ------------------------------------------------------------------


@dataclass
class Block:
    """One fenced block of a Markdown file."""

    doc: Path
    lang: str
    text: str
    line: int
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


@dataclass
class Command:
    """One ``$`` line of a console block and the output shown after it."""

    text: str
    output: list[str] = field(default_factory=list)


def blocks(doc: Path) -> list[Block]:
    source = doc.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(source):
        before = source[: match.start()].rstrip("\n")
        mark = NOT_RUN_MARK.search(before.rsplit("\n", 1)[-1])
        found.append(
            Block(
                doc,
                match.group(1),
                match.group(2),
                source.count("\n", 0, match.start()) + 1,
                mark.group("reason") if mark else None,
            )
        )
    return found


def commands(block: Block) -> list[Command]:
    result: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            result.append(Command(line[2:].strip()))
        elif result:
            result[-1].output.append(line.rstrip())
        elif line.strip():
            raise AssertionError(f"{block.where}: output before the first $ line: {line!r}")
    for command in result:
        while command.output and not command.output[-1]:
            command.output.pop()
    return result


def console_blocks(doc: Path) -> list[Block]:
    return [b for b in blocks(doc) if b.lang == "console"]


def file_blocks(doc: Path) -> dict[str, str]:
    """``{path: text}`` of the blocks whose first line is ``# <path>`` (or ``# <path>  (note)``)."""
    files = {}
    for block in blocks(doc):
        first, _, rest = block.text.partition("\n")
        match = re.match(r"#\s+(~/\S+|[\w.-]+(?:/[\w.-]+)*\.(?:py|yaml|yml|toml))(\s|$)", first)
        if match and block.lang in ("python", "yaml", "toml"):
            files[match.group(1)] = block.text
    return files


# -- the sandbox -----------------------------------------------------------------------


def walkthrough_files() -> dict[str, str]:
    """The README walkthrough's files; the kaze pyproject is the API's, renamed,
    as the README says."""
    files = file_blocks(REPO / "README.md")
    files["~/weather-kaze/pyproject.toml"] = files["~/weather-api/pyproject.toml"].replace(
        'name = "weather-api"', 'name = "weather-kaze"'
    ).replace("# ~/weather-api/", "# ~/weather-kaze/")
    return files


def make_venv(folder: Path) -> None:
    """``folder/.venv``: a virtual environment that sees the test venv's packages
    (a ``.pth`` file), with its own ``pip`` and ``stackflask`` scripts; what it
    installs stays in it."""
    venv = folder / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    parent = sysconfig_purelib()
    # addsitedir, not a plain path line, so that the parent's own .pth files
    # (editable installs among them) are processed too.
    (Path(site) / "_stackflask_tests_parent.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    for name, entry in (("pip", "pip._internal.cli.main"), ("stackflask", "stackflask.cli")):
        script = venv / "bin" / name
        script.write_text(
            f"#!{python}\nimport sys\nfrom {entry} import main\nsys.exit(main())\n"
        )
        script.chmod(0o755)


def sysconfig_purelib() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


class Sandbox:
    """A temporary HOME for one doc's commands; see the module docstring."""

    def __init__(self, root: Path, doc: Path) -> None:
        self.home = (root / "you").resolve()
        self.home.mkdir(parents=True)
        files = walkthrough_files()
        if doc.name != "README.md":
            files.update(file_blocks(doc))
        for name, text in files.items():
            path = self.home / name.removeprefix("~/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        # Not HOME/stackflask: from HOME, that folder would shadow the package.
        self.clone = self.home / "src" / "stackflask"
        self.clone.mkdir(parents=True)
        make_venv(self.clone)
        self.cwd = self.clone if doc.name in FROM_CLONE else self.home
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STACKFLASK_", "FLASK_", "LLAMA_STACK_", "PYTHON"))
        }
        self.env["HOME"] = str(self.home)
        self.env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        if doc.name != "README.md":
            # The README's walkthrough installs the packages in the clone's .venv; elsewhere
            # they are on the path as if installed.
            self.env["PYTHONPATH"] = os.pathsep.join(
                str(self.home / p / "src") for p in ("weather-api", "weather-kaze")
            )
        self.ports: dict[str, int] = {}
        self.servers: list[tuple[subprocess.Popen[bytes], Path, str]] = []

    def port(self, documented: str) -> int:
        if documented not in self.ports:
            used = set(self.ports.values())
            port = free_port()
            while port in used:
                port = free_port()
            self.ports[documented] = port
        return self.ports[documented]

    def translate(self, text: str) -> str:
        """The command as run here: free ports for the documented ones."""
        for documented in PORT.findall(text):
            self.port(documented)
        for documented, port in self.ports.items():
            text = re.sub(rf"(?<!\d){documented}(?!\d)", str(port), text)
        return text

    def shown(self, text: str) -> str:
        """Output as the doc shows it: HOME as /home/you, documented ports."""
        text = text.replace(str(self.home), SHOWN_HOME)
        for documented, port in self.ports.items():
            text = re.sub(rf"(?<!\d){port}(?!\d)", documented, text)
        return text

    # -- running

    def run(self, command: Command, where: str) -> None:
        text = self.translate(command.text)
        if SERVER.search(command.text):
            self.start_server(text, command, where)
        elif re.match(r"curl\s", command.text):
            self.curl(text, command, where)
        else:
            self.foreground(text, command, where)

    def foreground(self, text: str, command: Command, where: str) -> None:
        result = subprocess.run(
            ["bash", "-c", text], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT,
        )
        output = self.shown(result.stdout.decode(errors="replace"))
        failing = any(line.startswith(("error:", "Error:")) for line in command.output)
        assert (result.returncode != 0) == failing, (
            f"{where}: `{command.text}` exited {result.returncode}:\n{output}"
        )
        if command.output:
            assert_output(command.output, output.splitlines(), where, command.text)

    def start_server(self, text: str, command: Command, where: str) -> None:
        env = dict(self.env)
        env.setdefault("STACKFLASK_PORT", str(self.port("8321")))
        ports = [int(p) for p in PORT.findall(text)] or [int(env["STACKFLASK_PORT"])]
        log_path = self.home.parent / f"server-{len(self.servers)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["bash", "-c", text], cwd=self.cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.servers.append((proc, log_path, where))
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{ports[0]}/v1/health"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{where}: `{command.text}` exited:\n{log_path.read_text()}")
            try:
                if requests.get(url, timeout=1).status_code == 200 and proc.poll() is None:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{where}: `{command.text}` did not answer:\n{log_path.read_text()}")
            time.sleep(0.05)
        if command.output:
            self.pending.append((command, log_path, where))

    pending: list[tuple[Command, Path, str]]

    def curl(self, text: str, command: Command, where: str) -> None:
        args = shlex.split(text)[1:]
        method, headers, data, url = "GET", {}, None, None
        while args:
            arg = args.pop(0)
            if arg in ("-s", "-S", "-sS", "-f", "-sSf", "-N", "-sN"):
                continue
            if arg == "-X":
                method = args.pop(0)
            elif arg == "-H":
                key, _, value = args.pop(0).partition(":")
                headers[key.strip()] = value.strip()
            elif arg in ("-d", "--data"):
                data = args.pop(0)
                method = "POST" if method == "GET" else method
            elif not arg.startswith("-") and url is None:
                url = arg
            else:
                raise AssertionError(f"{where}: curl option {arg!r} is not supported by the doc tests")
        assert url is not None, f"{where}: no URL in `{command.text}`"
        response = requests.request(method, url, headers=headers, data=data, timeout=10)
        if command.output:  # curl prints the body whatever the status
            assert_output(command.output, self.shown(response.text).splitlines(), where, command.text)
        else:
            assert response.ok, f"{where}: `{command.text}` answered {response.status_code}: {response.text}"

    def stop_servers(self) -> None:
        for proc, _, _ in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(15)
        self.servers.clear()
        for command, log_path, where in self.pending:
            output = self.shown(log_path.read_text(errors="replace"))
            assert_output(command.output, output.splitlines(), where, command.text, exact=False)
        self.pending.clear()


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def assert_output(
    expected: list[str], actual: list[str], where: str, command: str, exact: bool = True
) -> None:
    """``exact``: line for line; else every expected line, in order, among ``actual``.

    An expected line that is just ``...`` stands for lines left out: the rest
    is then matched as when not ``exact``.
    """
    if "..." in expected:
        expected, exact = [line for line in expected if line != "..."], False
    actual = [line.rstrip() for line in actual]
    while actual and not actual[-1]:
        actual.pop()
    message = f"{where}: `{command}` printed:\n" + "\n".join(actual)
    if exact:
        assert len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual)
        ), message
        return
    lines = iter(actual)
    for line in expected:
        assert any(matches(line, a) for a in lines), f"{message}\n(missing: {line!r})"


def server_before(doc: Path, block: Block) -> str | None:
    """The last server command of the code blocks before ``block`` in its doc:
    a console block that only sends requests talks to that server."""
    found = None
    for other in blocks(doc):
        if other.line >= block.line:
            break
        for line in other.text.splitlines():
            for part in line.removeprefix("$ ").split("&&"):
                if SERVER.search(part.strip()):
                    found = part.strip()
    return found


# -- the tests -------------------------------------------------------------------------


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(REPO))


@pytest.fixture
def sandbox(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path, request.param)
    box.pending = []
    try:
        yield box
    finally:
        box.stop_servers()


@pytest.mark.parametrize("sandbox", DOCS, ids=doc_id, indirect=True)
def test_every_command_runs(sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
    doc = request.node.callspec.params["sandbox"]
    for block in console_blocks(doc):
        if block.not_run:
            continue
        cmds = commands(block)
        assert cmds, f"{block.where}: a console block without a $ line"
        if not any(SERVER.search(c.text) for c in cmds) and any(
            c.text.startswith("curl ") for c in cmds
        ):
            server = server_before(doc, block)
            assert server, f"{block.where}: curl, but no server started before it"
            sandbox.run(Command(server), block.where)
        for command in cmds:
            sandbox.run(command, block.where)
        sandbox.stop_servers()


def test_not_run_blocks_are_the_known_ones() -> None:
    shown = {}
    for doc in DOCS:
        for block in console_blocks(doc):
            if block.not_run:
                assert block.not_run.strip(), f"{block.where}: a not-run block needs a reason"
                for command in commands(block):
                    shown[command.text] = block.where
    assert set(shown) == set(NOT_RUN), (
        "commands marked <!-- not run --> must be listed, with the reason, in NOT_RUN: "
        f"{sorted(set(shown) ^ set(NOT_RUN))}"
    )


def test_console_commands_are_few_and_found() -> None:
    """The parser finds the README's command, and the set of commands stays small."""
    found = {c.text for doc in DOCS for b in console_blocks(doc) for c in commands(b)}
    assert "curl http://127.0.0.1:8321/v1/weather/locations" in found
    assert len(found) <= 40, sorted(found)


def test_venv_commands_run_from_the_clone() -> None:
    """``.venv`` is the README's, in the clone: a doc that uses it says to run its
    commands from there (and is in FROM_CLONE), and names every file outside the
    clone by an absolute or ``~`` path."""
    for doc in DOCS:
        cmds = [c.text for b in console_blocks(doc) if not b.not_run for c in commands(b)]
        uses_venv = any(re.search(r"(^|\s)\.venv/", c) for c in cmds)
        assert uses_venv == (doc.name in FROM_CLONE), doc_id(doc)
        if uses_venv:
            assert "from the clone of this repository" in doc.read_text(encoding="utf-8")
            for command in cmds:
                for word in shlex.split(command)[1:]:
                    if re.match(r"[a-z][\w.]*-(api|kaze|sunny)\b", word):
                        raise AssertionError(f"{doc_id(doc)}: `{command}` names {word!r} "
                                             "relative to the clone; give its ~ path")


def test_pytest_is_installed_where_it_runs() -> None:
    """A doc that runs ``<venv>/bin/python -m pytest`` installs pytest (or a
    ``[test]`` extra) with that venv's pip first: the README's venv has no pytest."""
    for doc in DOCS:
        earlier: list[str] = []
        for block in console_blocks(doc):
            for command in commands(block):
                match = re.match(r"(\S*/)python -m pytest\b", command.text)
                if match:
                    pip = re.escape(match.group(1)) + r"pip install\b"
                    assert any(
                        re.match(pip, c) and re.search(r"(\s|')pytest\b|\[test\]", c)
                        for c in earlier
                    ), f"{doc_id(doc)}: `{command.text}` runs pytest that no earlier command installs"
                earlier.append(command.text)


def test_readme_links_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    expected = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert set(links) == expected, "every doc is linked from the README, and every link exists"
    for link in links:
        assert (REPO / link).is_file(), link


def test_doc_files_parse() -> None:
    """Every file a doc shows (a block starting with ``# <path>``) is valid Python,
    YAML or TOML."""
    import tomllib

    for doc in DOCS:
        for path, text in file_blocks(doc).items():
            if path.endswith(".py"):
                compile(text, path, "exec")
            elif path.endswith((".yaml", ".yml")):
                yaml.safe_load(text)
            elif path.endswith(".toml"):
                tomllib.loads(text)


def test_every_subcommand_in_cli_doc() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    names = []
    for name, command in main.commands.items():
        names.append(name)
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    for name in names:
        assert f"stackflask {name}" in text, f"docs/cli.md does not document `stackflask {name}`"
        command: Any = main
        for part in name.split():
            command = command.commands[part]
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, f"docs/cli.md does not document {name} {opt}"


# -- startup errors ------------------------------------------------------------------------

#: For each case of the startup error table, the phrase that identifies the
#: message in docs/troubleshooting.md.
ERROR_PHRASES = {
    "run-config-invalid-yaml": "invalid YAML: line",
    "top-level-list": "expected a mapping at the top level, got",
    "empty-file": "the file is empty",
    "unset-env-variable": "is not set",
    "entry-missing-provider_id": "Missing data for required field.",
    "entry-unknown-key": "Unknown field.",
    "port-out-of-range": "Must be greater than or equal to 1 and less than or equal to 65535",
    "port-not-a-number": "Not a valid integer.",
    "external_apis_dir-missing": "is not a directory",
    "external_apis_dir-is-a-file": "is not a directory",
    "external_providers_dir-missing": "is not a directory",
    "missing-protocol": "protocol: Missing data for required field.",
    "missing-module": "module: Missing data for required field.",
    "unknown-key-protocl": "Unknown field.",
    "api-spec-invalid-yaml": "invalid YAML: line",
    "not-a-mapping": "expected a mapping",
    "two-specs-one-name": "remove one of the two files",
    "name-with-dot": "is not a valid API name",
    "name-starting-with-digit": "not starting with a digit",
    "name-is-keyword": "is reserved and cannot name an API",
    "name-shadows-api-attribute": "is reserved and cannot name an API",
    "module-not-found": "is not installed or not on sys.path",
    "module-imports-missing-module": "failed: ModuleNotFoundError: No module named",
    "module-raises-at-import": "failed: RuntimeError",
    "protocol-not-defined": "is not defined in module",
    "protocol-is-a-function": "is not a class in module",
    "protocol-without-webmethods": "has no methods decorated with @webmethod",
    "webmethod-unknown-http-method": "is not one of GET, POST, PUT, PATCH, DELETE",
    "foreign-record-unknown-http-method": "is not one of GET",
    "webmethod-malformed-route": "has a malformed placeholder",
    "spec-first-config-no-provider": "has no provider; add one with provider_id and provider_type",
    "api-not-defined": "is not defined (add its spec to external_apis_dir;",
    "two-providers-for-one-api": "remove all but one",
    "unknown-provider-type": "is not available; known:",
    "entry-module-not-found": "is not installed",
    "available_providers-raises": "available_providers() raised",
    "provider-spec-without-module": "has no module",
    "entry-module-without-get_provider_spec": "defines no get_provider_spec()",
    "remote-missing-adapter-module": "adapter.module: Missing data for required field.",
    "remote-missing-adapter": "adapter: Missing data for required field.",
    "inline-unknown-key": "Unknown field.",
    "remote-adapter-unknown-key": "Unknown field.",
    "inline-missing-module": "module: Missing data for required field.",
    "pydantic-wrong-type": "Input should be a valid integer",
    "pydantic-missing-field": "Field required",
    "marshmallow-unknown-field": "Unknown field.",
    "marshmallow-missing-field": "Missing data for required field.",
    "dataclass-unknown-field": "Unknown field.",
    "dataclass-missing-field": "Missing data for required field.",
    "plain-class-unknown-field": "unexpected keyword argument",
    "plain-class-missing-field": "required keyword-only argument",
    "config-class-not-defined": "of provider",
    "no-get_provider_impl": "defines no get_provider_impl(config, deps)",
    "remote-without-get_adapter_impl": "defines no get_adapter_impl(config, deps)",
    "get_provider_impl-raises": "failed to start",
    "get_provider_impl-returns-none": "returned None",
    "missing-webmethods": "does not implement",
    "impl-inherits-protocol-stub": "does not implement",
    "instance-attribute-hides-webmethod": "hides the webmethod",
    "missing-dependency-from-provider-spec": "which is not served",
    "missing-dependency-from-api-spec": "which is not served",
    "dependency-cycle": "API dependency cycle:",
    "two-apis-same-route": "is declared by both",
    "route-collides-with-builtin-health": "stackflask's built-in endpoints",
    "route-collides-with-builtin-placeholder": "stackflask's built-in endpoints",
    "unsupported-parameter-type": "unsupported type",
    "route-placeholder-not-a-parameter": "which is not a parameter",
}

#: Messages the code can print that the table does not exercise (read from
#: config.py, registry.py, resolver.py, factory.py, webmethod.py, importing.py,
#: cli.py, scaffold.py, loop.py, serve.py and log.py).
OTHER_PHRASES = [
    "cannot be read:",
    "not valid UTF-8:",
    "expected a mapping with module, name and protocol",
    "must return a list of provider specs, got",
    "has no provider_type",
    "(set module=, or adapter=AdapterSpec(module=...))",
    "get_provider_spec() raised",
    "route must be a non-empty string",
    "names a placeholder twice",
    "return: unsupported type",
    "is not a dotted path to an object (module.Name)",
    "the embedded default config is not installed",
    "is not a port number",
    "are not known until its API package is installed",
    "unknown API",
    "Give exactly one of token and sha256.",
    "Not a SHA-256 hex digest.",
    "needs flask-cors 6.0 or later",
    # an address stackflask run cannot listen on (serve.py)
    "is already in use by another process",
    "ports below 1024 need privileges",
    "is not an address of this machine",
    "is not a known host name or address",
    "is not a valid API name: use lowercase letters",
    "would give the provider the API package's own name",
    "already exists; remove it or choose another --dir",
    "needs the API package that 'stackflask new api",
    "install its spec's pip_packages: pip install",
    # parameter markers, uploads and return types (binding.py, params.py, results.py)
    "is not understood; use Query, Body, Path, Form or File",
    "is not supported; use Query, Body, Path, Form or File",
    "markers (",
    "is marked Path() but route",
    "but marked",
    "is marked Query() but its type is not a scalar or a list of scalars",
    "Body() parameters cannot be mixed with Form() or File()",
    "raw_bytes_request_body needs exactly one body parameter",
    "receives the raw body (raw_bytes_request_body) and must be annotated bytes",
    "File() takes UploadFile, bytes or a list of them",
    "cannot be sent as JSON; annotate a JSON type, a dataclass, a pydantic model, Response or bytes",
    "needs pydantic, which is not installed",
    "pydantic cannot validate it:",
    # a real Llama Stack installed (compat.py)
    "its Api cannot register external APIs (it has no Api.add)",
    "cannot be registered with Llama Stack's Api",
    "Llama Stack's Api has no member",
    # warnings
    "not used by stackflask; ignored",
    "is not registered (no apis.d spec loaded it); ignored",
    "overrides the one from",
    "is not listed in apis; its providers are ignored",
    "is not category=level",
    "shutdown() took longer than",
    "did not stop within",
    "the event loop has been blocked for",
    "still running after the",
    # request time (context.py)
    "ignoring X-LlamaStack-Provider-Data: not valid JSON",
    "ignoring X-LlamaStack-Provider-Data: nested too deeply",
    "ignoring X-LlamaStack-Provider-Data: rejected by",
]


def startup_cases() -> list[Any]:
    t = test_startup_errors
    return (
        t.RUN_CONFIG_CASES + t.API_SPEC_CASES + t.API_CASES + t.PROVIDERS_DIR_CASES
        + t.CONFIG_CASES + t.IMPLEMENTATION_CASES + t.DEPENDENCY_CASES + t.ROUTE_CASES
    )


def test_every_startup_error_case_has_a_phrase() -> None:
    cases = {case.id: case.values[1] for case in startup_cases()}
    assert set(cases) == set(ERROR_PHRASES), (
        "give each startup error case a phrase in ERROR_PHRASES (and document it): "
        f"{sorted(set(cases) ^ set(ERROR_PHRASES))}"
    )
    for case_id, fragments in cases.items():
        text = " ".join(fragments).replace("{{", "{").replace("}}", "}")
        assert ERROR_PHRASES[case_id] in text, (case_id, ERROR_PHRASES[case_id], text)


@pytest.mark.parametrize("phrase", sorted(set(ERROR_PHRASES.values()) | set(OTHER_PHRASES)))
def test_troubleshooting_explains(phrase: str) -> None:
    text = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert phrase in text, f"docs/troubleshooting.md does not explain {phrase!r}"
