"""``stackflask new`` and ``stackflask.testing``: the packages they make and serve.

The scaffolded packages are written under ``tmp_path`` by the real command,
checked file by file, served in this process through ``stackflask.testing``,
and in the round trip installed into a fresh virtual environment, validated,
served by ``stackflask run`` on a free loopback port and tested by their own
tests with that environment's pytest.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import venv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner, Result
from conftest import REPO, Server, StackFiles, free_port, server_env

from stackflask import StartupError
from stackflask.cli import main
from stackflask.config import load_run_config
from stackflask.registry import (
    ApiSpecSchema,
    InlineProviderFileSchema,
    RemoteProviderFileSchema,
)
from stackflask.testing import stack_app, stack_client

API_FILES = {
    "pyproject.toml",
    "README.md",
    "src/weather_api/__init__.py",
    "apis.d/weather.yaml",
    "tests/test_api.py",
}
KINDS = [
    pytest.param(["--remote"], "remote", "get_adapter_impl", id="remote"),
    pytest.param(["--inline"], "inline", "get_provider_impl", id="inline"),
    pytest.param([], "inline", "get_provider_impl", id="default-inline"),
]


def new(*args: str) -> Result:
    return CliRunner().invoke(main, ["new", *args])


def provider_files(kind: str) -> set[str]:
    return {
        "pyproject.toml",
        "README.md",
        "src/weather_kaze/__init__.py",
        f"providers.d/{kind}/weather/kaze.yaml",
        "run.yaml",
        "tests/test_provider.py",
    }


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def compile_sources(folder: Path) -> None:
    for path in folder.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


# -- stackflask new ---------------------------------------------------------


def test_new_api_writes_the_package(tmp_path):
    result = new("api", "weather", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    package = tmp_path / "weather-api"
    assert files_under(package) == API_FILES
    assert f"created {package}/" in result.output
    compile_sources(package)
    spec = ApiSpecSchema().load(yaml.safe_load((package / "apis.d/weather.yaml").read_text()))
    assert spec == {
        "module": "weather_api",
        "name": "weather",
        "protocol": "WeatherApi",
        "api_dependencies": [],
        "pip_packages": ["weather-api"],
    }
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "weather-api"' in pyproject
    assert 'dependencies = ["stackflask"]' in pyproject
    source = (package / "src/weather_api/__init__.py").read_text()
    assert "class WeatherApi(Protocol):" in source
    assert '@webmethod(route="/weather/hello", method="GET")' in source
    assert "def available_providers() -> list[ProviderSpec]:" in source


@pytest.mark.parametrize(("flags", "kind", "factory"), KINDS)
def test_new_provider_writes_the_package(tmp_path, flags, kind, factory):
    assert new("api", "weather", "--dir", str(tmp_path)).exit_code == 0
    result = new("provider", "kaze", "--api", "weather", *flags, "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    package = tmp_path / "weather-kaze"
    assert files_under(package) == provider_files(kind)
    compile_sources(package)
    schema = RemoteProviderFileSchema() if kind == "remote" else InlineProviderFileSchema()
    spec = schema.load(yaml.safe_load((package / f"providers.d/{kind}/weather/kaze.yaml").read_text()))
    where = spec["adapter"] if kind == "remote" else spec
    assert (where["module"], where["config_class"], where["pip_packages"]) == (
        "weather_kaze", "weather_kaze.KazeConfig", ["weather-kaze"]
    )
    run_config = load_run_config(package / "run.yaml")
    assert run_config.apis == ["weather"]
    [entry] = run_config.providers["weather"]
    assert (entry.provider_id, entry.provider_type) == ("kaze", f"{kind}::kaze")
    assert run_config.external_apis_dir.resolve() == tmp_path / "weather-api" / "apis.d"
    assert run_config.external_providers_dir == package / "providers.d"
    source = (package / "src/weather_kaze/__init__.py").read_text()
    other = {"get_adapter_impl", "get_provider_impl"} - {factory}
    assert f"async def {factory}(config: KazeConfig" in source
    assert other.pop() not in source
    assert "class KazeWeather(WeatherApi):" in source
    assert '"weather-api"' in (package / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("args", "folder"),
    [
        (["api", "weather"], "weather-api"),
        (["provider", "kaze", "--api", "weather"], "weather-kaze"),
    ],
    ids=["api", "provider"],
)
def test_new_refuses_an_existing_folder(tmp_path, args, folder):
    if args[0] == "provider":
        assert new("api", "weather", "--dir", str(tmp_path)).exit_code == 0
    before = files_under(tmp_path)
    existing = tmp_path / folder
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    result = new(*args, "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == f"error: {existing}: already exists; remove it or choose another --dir\n"
    assert files_under(tmp_path) == before | {f"{folder}/mine.txt"}
    assert (existing / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["api", "Weather"], ("Invalid value for 'NAME': 'Weather' is not a valid API name: "
                              "use lowercase letters, digits and single underscores, "
                              "starting with a letter")),
        (["api", "my-api"], "'my-api' is not a valid API name"),
        (["api", "2fast"], "'2fast' is not a valid API name"),
        (["api", "weather_"], "'weather_' is not a valid API name"),
        (["api", "my__api"], "'my__api' is not a valid API name"),
        (["api", "name"], "'name' is reserved and cannot name an API"),
        (["provider", "Kaze", "--api", "weather"], "'Kaze' is not a valid provider name"),
        (["provider", "api", "--api", "weather"],
         "'api' would give the provider the API package's own name; choose another"),
        (["provider", "kaze", "--api", "bad-api"],
         "Invalid value for '--api': 'bad-api' is not a valid API name"),
        (["provider", "kaze"], "Missing option '--api'"),
    ],
)
def test_new_usage_errors(tmp_path, args, message):
    result = new(*args, "--dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize(
    ("setup", "dir_arg", "message"),
    [
        (lambda root: None, ".",
         "error: nosuchapi-api: not found; --api nosuchapi needs the API package that "
         "'stackflask new api nosuchapi' makes, in the provider's --dir: run "
         "'stackflask new api nosuchapi --dir .' first, or pass the --dir that holds "
         "nosuchapi-api/"),
        (lambda root: (root / "nosuchapi-api").mkdir(), ".",
         "error: nosuchapi-api/apis.d/nosuchapi.yaml: not found; --api nosuchapi needs the API "
         "package that 'stackflask new api nosuchapi' makes"),
        (lambda root: new("api", "nosuchapi"), "my dir",
         "error: my dir/nosuchapi-api: not found; --api nosuchapi needs the API package that "
         "'stackflask new api nosuchapi' makes, in the provider's --dir: run "
         "'stackflask new api nosuchapi --dir 'my dir'' first"),
    ],
    ids=["no-api-folder", "folder-without-spec", "api-in-another-dir"],
)
def test_new_provider_needs_the_api_package(tmp_path, monkeypatch, setup, dir_arg, message):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    before = files_under(tmp_path)
    result = new("provider", "x", "--api", "nosuchapi", "--dir", dir_arg)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(message), result.stderr
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "dir_arg",
    [".", "elsewhere", "a/b", "my dir", "ABSOLUTE"],
    ids=["default", "relative", "nested", "with-a-space", "absolute"],
)
def test_new_hints_name_the_folders_written(tmp_path, monkeypatch, dir_arg):
    """Each ``next:`` line is a command whose paths exist where it was printed."""
    monkeypatch.chdir(tmp_path)
    directory = str(tmp_path / "abs") if dir_arg == "ABSOLUTE" else dir_arg
    made_api = new("api", "weather", "--dir", directory)
    assert made_api.exit_code == 0, made_api.output
    hint = shlex.split(made_api.stdout.splitlines()[-1].removeprefix("next: "))
    assert hint[:5] == ["stackflask", "new", "provider", "NAME", "--api"]
    made_kaze = new("provider", "kaze", *hint[4:])  # NAME filled in
    assert made_kaze.exit_code == 0, made_kaze.output
    assert made_kaze.stdout.splitlines()[0] == f"created {Path(directory) / 'weather-kaze'}/"
    pip = shlex.split(made_kaze.stdout.splitlines()[-1].removeprefix("next: "))
    assert pip[:2] == ["pip", "install"]
    editables = pip[3::2]
    assert pip[2::2] == ["-e", "-e"]
    assert [Path(p).resolve() for p in editables] == [
        (tmp_path / directory / name).resolve() for name in ("weather-api", "weather-kaze")
    ]
    assert all((Path(p) / "pyproject.toml").is_file() for p in editables)


@pytest.mark.parametrize("kind", ["api", "remote", "inline"])
def test_scaffolded_files_link_only_to_the_local_server(tmp_path, kind):
    """No link to a page that does not exist (stackflask is on no package index)."""
    assert new("api", "weather", "--dir", str(tmp_path)).exit_code == 0
    if kind != "api":
        result = new("provider", "kaze", "--api", "weather", f"--{kind}", "--dir", str(tmp_path))
        assert result.exit_code == 0, result.output
    package = tmp_path / ("weather-api" if kind == "api" else "weather-kaze")
    urls = {
        url
        for path in package.rglob("*") if path.is_file()
        for url in re.findall(r"https?://[^\s)'\"`>]+", path.read_text())
    }
    assert urls and all(url.startswith("http://127.0.0.1:8321/") for url in urls), urls
    assert "pypi.org" not in "".join(p.read_text() for p in package.rglob("*.md"))


def test_new_dir_must_not_be_a_file(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = new("api", "weather", "--dir", str(a_file))
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--dir': Directory '{a_file}' is a file." in result.stderr
    assert files_under(tmp_path) == {"a-file"}


def test_new_creates_the_dir(tmp_path):
    result = new("api", "my_thing", "--dir", str(tmp_path / "a" / "b"))
    assert result.exit_code == 0, result.output
    package = tmp_path / "a" / "b" / "my-thing-api"
    assert (package / "src/my_thing_api/__init__.py").is_file()
    assert "class MyThingApi(Protocol):" in (package / "src/my_thing_api/__init__.py").read_text()


# -- the scaffolded packages, in this process --------------------------------


@pytest.fixture
def scaffolded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make(kind)``: ``weather-api`` and ``weather-kaze`` under ``tmp_path``,
    importable; their modules are purged afterwards."""

    def make(flags: Sequence[str]) -> Path:
        for args in (["api", "weather"], ["provider", "kaze", "--api", "weather", *flags]):
            result = new(*args, "--dir", str(tmp_path))
            assert result.exit_code == 0, result.output
        monkeypatch.syspath_prepend(str(tmp_path / "weather-api" / "src"))
        monkeypatch.syspath_prepend(str(tmp_path / "weather-kaze" / "src"))
        return tmp_path

    yield make
    for name in ("weather_api", "weather_kaze"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("flags", "kind", "factory"), KINDS)
def test_scaffolded_provider_serves_through_stackflask_testing(scaffolded, flags, kind, factory):
    scaffolded(flags)
    with stack_client(
        api="weather_api",
        protocol="WeatherApi",
        name="weather",
        provider="weather_kaze",
        provider_type=f"{kind}::kaze",
        config_class="weather_kaze.KazeConfig",
        config={"greeting": "Bonjour"},
    ) as client:
        response = client.get("/v1/weather/hello", query_string={"name": "Ada"})
        assert response.status_code == 200
        assert response.json == {"message": "Bonjour, Ada!"}


@pytest.mark.parametrize(("flags", "kind", "factory"), KINDS)
def test_scaffolded_run_config_serves(scaffolded, make_app, flags, kind, factory):
    root = scaffolded(flags)
    client = make_app(root / "weather-kaze" / "run.yaml").test_client()
    assert client.get("/v1/weather/hello").json == {"message": "Hello, world!"}
    assert client.get("/v1/providers").json["data"][0]["provider_type"] == f"{kind}::kaze"


def test_passthrough_scaffold_serves_through_the_upstream(tmp_path: Path) -> None:
    """``--passthrough`` writes a run.yaml and a README, no code; ``stackflask run``
    serves it in front of a server that serves the API with a scaffolded provider."""
    for args in (["api", "weather"], ["provider", "kaze", "--api", "weather"],
                 ["provider", "relay", "--api", "weather", "--passthrough"]):
        result = new(*args, "--dir", str(tmp_path))
        assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "weather-relay") == {"README.md", "run.yaml"}
    assert f"next: pip install -e {tmp_path / 'weather-api'} httpx" in result.output
    [entry] = load_run_config(tmp_path / "weather-relay" / "run.yaml").providers["weather"]
    assert entry.provider_type == "remote::stackflask"
    pythonpath = [tmp_path / "weather-api" / "src", tmp_path / "weather-kaze" / "src", REPO]
    upstream_port, front_port = free_port(), free_port()
    servers = []
    try:
        for port, package, extra in [
            (upstream_port, "weather-kaze", {}),
            (front_port, "weather-relay",
             {"WEATHER_RELAY_URL": f"http://127.0.0.1:{upstream_port}", "WEATHER_RELAY_TOKEN": "t0ken"}),
        ]:
            command = [sys.executable, "-m", "stackflask", "run", "--config",
                       str(tmp_path / package / "run.yaml"), "--port", str(port)]
            servers.append(Server(command, port, tmp_path / f"{package}.log", tmp_path,
                                  server_env(pythonpath, **extra)))
            servers[-1].wait_ready()
        upstream, front = servers
        response = requests.get(front.url("/v1/weather/hello?name=Ada"), timeout=10)
        assert (response.status_code, response.json()) == (200, {"message": "Hello, Ada!"})
        [provider] = requests.get(front.url("/v1/providers"), timeout=10).json()["data"]
        assert provider["provider_type"] == "remote::stackflask"
        assert provider["config"]["token"] == "********"
        assert provider["health"]["upstream"] == upstream.url("")
    finally:
        for server in servers:
            server.stop()


# -- stackflask.testing ------------------------------------------------------

TINY_API = """
    from typing import Protocol

    from stackflask import Api, InlineProviderSpec, webmethod


    def available_providers():
        return [InlineProviderSpec(api=Api.tiny, provider_type="inline::builtin",
                                   module="tiny_provider", config_class="tiny_provider.TinyConfig")]


    class Tiny(Protocol):
        @webmethod(route="/tiny/echo", method="GET")
        async def echo(self, text: str) -> dict[str, str]: ...
"""

TINY_PROVIDER = """
    from dataclasses import dataclass

    EVENTS = []


    @dataclass
    class TinyConfig:
        prefix: str = ""


    class TinyImpl:
        def __init__(self, config):
            self.config = config

        async def echo(self, text: str) -> dict[str, str]:
            return {"echo": self.config.prefix + text}

        async def shutdown(self):
            EVENTS.append("shutdown")


    def get_provider_impl(config, deps):
        EVENTS.append("start")
        return TinyImpl(config)


    async def get_adapter_impl(config, deps):
        EVENTS.append("start")
        return TinyImpl(config)
"""


@pytest.fixture
def tiny(stack_files: StackFiles) -> Any:
    """The ``tiny`` API and its provider module, importable; the provider's ``EVENTS``."""
    stack_files.module("tiny_api", TINY_API)
    stack_files.module("tiny_provider", TINY_PROVIDER)
    import tiny_provider

    return tiny_provider.EVENTS


TINY = {"api": "tiny_api", "protocol": "Tiny", "name": "tiny"}


@pytest.mark.parametrize("provider_type", ["remote::tiny", "inline::tiny"])
def test_stack_client_serves_then_shuts_down(tiny, provider_type):
    with stack_client(
        **TINY,
        provider="tiny_provider",
        provider_type=provider_type,
        config_class="tiny_provider.TinyConfig",
        config={"prefix": ">"},
    ) as client:
        assert tiny == ["start"]
        assert client.get("/v1/tiny/echo?text=hi").json == {"echo": ">hi"}
        assert client.application.testing
    assert tiny == ["start", "shutdown"]


def test_stack_client_uses_available_providers(tiny):
    with stack_client(**TINY, provider_type="inline::builtin", config={"prefix": "+"}) as client:
        assert client.get("/v1/tiny/echo", query_string={"text": "x"}).json == {"echo": "+x"}
        [provider] = client.get("/v1/providers").json["data"]
        assert (provider["provider_id"], provider["provider_type"]) == ("builtin", "inline::builtin")
    assert tiny == ["start", "shutdown"]


def test_stack_client_shuts_down_when_the_test_fails(tiny):
    with pytest.raises(AssertionError), stack_client(**TINY, provider_type="inline::builtin"):
        raise AssertionError
    assert tiny == ["start", "shutdown"]


def test_stack_app_keeps_no_files(tiny):
    app = stack_app(
        **TINY,
        provider="tiny_provider",
        provider_type="inline::tiny",
        config_class="tiny_provider.TinyConfig",
    )
    stack = app.extensions["stackflask"]
    try:
        assert stack.config.external_apis_dir is not None
        assert not stack.config.external_apis_dir.parent.exists()
        assert app.test_client().get("/v1/tiny/echo?text=a").json == {"echo": "a"}
    finally:
        stack.shutdown()
    assert tiny == ["start", "shutdown"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"provider_type": "inline::nope"},
         ("<run config>: providers.tiny[0].provider_type: 'inline::nope' is not available; "
          "known: inline::builtin")),
        ({"provider_type": "inline::builtin", "config": {"colour": "red"}},
         "<run config>: providers.tiny[0] (builtin).config.colour: Unknown field."),
        ({"provider_type": "remote::tiny", "provider": "tiny_missing"},
         ("<run config>: providers.tiny[0]: provider 'remote::tiny': module 'tiny_missing' "
          "is not installed or not on sys.path")),
    ],
    ids=["unknown-provider-type", "bad-config", "missing-module"],
)
def test_stack_app_startup_errors(tiny, arguments, message):
    with pytest.raises(StartupError) as info:
        stack_app(**TINY, **arguments)
    assert message in str(info.value)
    assert tiny == []


@pytest.mark.parametrize("provider_type", ["tiny", "local::tiny", "inline::"])
def test_stack_app_needs_a_kind_and_a_name(provider_type):
    with pytest.raises(ValueError, match="must be 'remote::NAME' or 'inline::NAME'"):
        stack_app(**TINY, provider_type=provider_type)


# -- the round trip: a fresh virtual environment -----------------------------


def clean_env() -> dict[str, str]:
    """The environment without this process's venv, path and stackflask settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV")
        and not k.startswith(("STACKFLASK_", "FLASK_", "LLAMA_STACK_", "PYTEST_"))
    }


def run(args: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to completion; fail with its output unless it exits 0."""
    done = subprocess.run(
        [os.fspath(a) for a in args], cwd=cwd, env=clean_env(),
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only stackflask (editable, from this
    repository) and its dependencies installed; its ``bin`` folder."""
    folder = tmp_path_factory.mktemp("venv")
    started = time.monotonic()
    venv.create(folder, with_pip=True)
    bin_dir = folder / ("Scripts" if sys.platform == "win32" else "bin")
    run([bin_dir / "python", "-m", "pip", "install", "-q", "-e", REPO], folder)
    print(f"fresh venv with stackflask: {time.monotonic() - started:.1f} s")
    return bin_dir


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "kind"), [("--remote", "remote"), ("--inline", "inline")])
def test_round_trip_in_a_fresh_venv(fresh_venv, tmp_path, flag, kind):
    started = time.monotonic()
    stackflask = fresh_venv / "stackflask"
    run([stackflask, "new", "api", "weather"], tmp_path)
    run([stackflask, "new", "provider", "kaze", "--api", "weather", flag], tmp_path)
    run([fresh_venv / "python", "-m", "pip", "install", "-q",
         "-e", "weather-api[test]", "-e", "weather-kaze[test]"], tmp_path)
    installed = time.monotonic()

    config = tmp_path / "weather-kaze" / "run.yaml"
    validated = run([stackflask, "validate", "--config", config], tmp_path)
    assert validated.stdout == f"ok: {config}: 1 API(s), 1 route(s)\n"

    port = free_port()
    server = Server(
        [os.fspath(stackflask), "run", "--config", os.fspath(config), "--port", str(port)],
        port, tmp_path / "server.log", tmp_path, clean_env(),
    )
    try:
        server.wait_ready()
        response = requests.get(server.url("/v1/weather/hello"), params={"name": "Ada"}, timeout=5)
        assert response.status_code == 200, server.output()
        assert response.json() == {"message": "Hello, Ada!"}
        provider = requests.get(server.url("/v1/providers/kaze"), timeout=5).json()
        assert provider["provider_type"] == f"{kind}::kaze"
    finally:
        code = server.stop()
    assert code == 0, server.output()
    served = time.monotonic()

    for package, count in (("weather-api", 3), ("weather-kaze", 3)):
        tested = run([fresh_venv / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                     tmp_path / package)
        assert f"{count} passed" in tested.stdout, tested.stdout
    print(
        f"round trip ({kind}): install {installed - started:.1f} s, serve {served - installed:.1f} s, "
        f"package tests {time.monotonic() - served:.1f} s"
    )
