"""Start Llama Stack 0.2.16 with the External APIs page's weather API and kaze provider.

For ``bench/run.py --llama-stack URL``:

    .venv/bin/python bench/llama_stack_server.py            # serves http://127.0.0.1:8322; Ctrl-C stops it
    .venv/bin/python bench/llama_stack_server.py --check    # starts it, checks the GET, stops it

Standard library only. It writes, under a private home (``--home``, default
/tmp/ls/home; the real ``~/.llama`` is not touched):

- the two packages of the page, ``src/llama-stack-api-weather`` and
  ``src/llama-stack-provider-kaze`` (a pyproject.toml each, as the page writes
  them, and the modules ``tests/test_servers.py`` holds as ``SPEC_*``: the
  page's code with its import mistakes fixed), installed into the venv
  (``--venv``, default /tmp/ls/venv; built with Python 3.12 and
  ``llama-stack==0.2.16`` under ``shared/spec/llama-stack-0.2.16-constraints.txt``
  when it does not exist, as ``tests/test_llama_stack.py`` builds its own);
- ``.llama/apis.d/weather.yaml``, ``.llama/providers.d/remote/weather/kaze.yaml``
  and ``.llama/run-byoa.yaml`` (the page's run config, listening on 127.0.0.1);

then runs ``llama stack run ~/.llama/run-byoa.yaml --port PORT`` with that home
(``HOME`` and ``LLAMA_STACK_CONFIG_DIR``) and ``LLAMA_STACK_LOGGING=all=warning``,
waits for ``/v1/health``, checks that ``GET /v1/weather/locations`` answers
``{"locations": ["Paris", "Tokyo"]}`` (stackflask's default answer) and prints
the URL. Ctrl-C, or SIGTERM to this process, stops the server.

(Not named ``llama_stack.py``: the bench's servers have bench/ on their
``PYTHONPATH``, where such a file would stand for Llama Stack's package.)
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONSTRAINTS = ROOT.parent / "shared" / "spec" / "llama-stack-0.2.16-constraints.txt"
VERSION = "0.2.16"
EXPECTED = {"locations": ["Paris", "Tokyo"]}

#: The packages' pyproject.toml files, as the External APIs page writes them.
PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
description = "{description}"
readme = "README.md"
requires-python = ">=3.10"
dependencies = [{dependencies}]

[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[tool.setuptools.packages.find]
where = ["src"]
include = ["{module}", "{module}.*"]
"""


def spec_texts() -> dict[str, str]:
    """The ``SPEC_*`` strings of tests/test_servers.py, read without importing it
    (it needs pytest and the tests' conftest)."""
    tree = ast.parse((ROOT / "tests" / "test_servers.py").read_text())
    texts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.startswith("SPEC_")):
            texts[node.targets[0].id] = ast.literal_eval(node.value)
    return texts


def files(port: int) -> tuple[dict[str, str], dict[str, str]]:
    """(files of the private home, files of the two packages), by relative path."""
    spec = spec_texts()
    run_yaml = spec["SPEC_RUN_YAML"].replace("  port: 8321\n", f"  host: 127.0.0.1\n  port: {port}\n")
    assert f"port: {port}" in run_yaml, "SPEC_RUN_YAML no longer has 'port: 8321' under server"
    home = {
        ".llama/apis.d/weather.yaml": spec["SPEC_API_YAML"],
        ".llama/providers.d/remote/weather/kaze.yaml": spec["SPEC_PROVIDER_YAML"],
        ".llama/run-byoa.yaml": run_yaml,
    }
    packages: dict[str, str] = {}
    for folder, module, description, deps, modules in (
        ("llama-stack-api-weather", "llama_stack_api_weather", "Weather API for Llama Stack",
         ["llama-stack", "pydantic"],
         {"__init__.py": "SPEC_API_INIT_PY", "weather.py": "SPEC_WEATHER_PY"}),
        ("llama-stack-provider-kaze", "llama_stack_provider_kaze",
         "Kaze weather provider for Llama Stack", ["llama-stack", "pydantic", "aiohttp"],
         {"__init__.py": "SPEC_KAZE_INIT_PY", "config.py": "SPEC_KAZE_CONFIG_PY",
          "kaze.py": "SPEC_KAZE_PY"}),
    ):
        packages[f"{folder}/pyproject.toml"] = PYPROJECT.format(
            name=folder, description=description, module=module,
            dependencies=", ".join(json.dumps(d) for d in deps))
        packages[f"{folder}/README.md"] = f"# {folder}\n\n{description}.\n"
        for name, key in modules.items():
            packages[f"{folder}/src/{module}/{name}"] = spec[key]
    return home, packages


def write(root: Path, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)


def clean_env(home: Path) -> dict[str, str]:
    """This environment without a venv's or stackflask's settings, with the private home."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
           and not k.startswith(("STACKFLASK_", "FLASK_", "LLAMA_STACK_"))}
    env["HOME"] = str(home)
    env["LLAMA_STACK_CONFIG_DIR"] = str(home / ".llama")
    return env


def python312() -> str:
    """``python3.12`` on the path, else pyenv's newest 3.12."""
    versions = Path.home() / ".pyenv" / "versions"
    pyenv = sorted(versions.glob("3.12*/bin/python"),
                   key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
                   reverse=True)
    for candidate in filter(None, [shutil.which("python3.12"), *map(str, pyenv)]):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                              capture_output=True, text=True, check=False)
        if done.stdout.strip() == "True":
            return candidate
    sys.exit(f"no Python 3.12 found (python3.12 on PATH, {versions}/3.12*): pass --python")


def step(args: list[str | Path], env: dict[str, str]) -> None:
    print("$", shlex.join(map(str, args)), flush=True)
    subprocess.run([str(a) for a in args], env=env, check=True)


def ensure_venv(venv: Path, python: str | None, env: dict[str, str]) -> None:
    """A venv with llama-stack 0.2.16: checked when it exists, else built."""
    py = venv / "bin" / "python"
    if not py.exists():
        if not CONSTRAINTS.is_file():
            sys.exit(f"{CONSTRAINTS} is missing (shared/ beside the repository pins Llama Stack's versions)")
        step([python or python312(), "-m", "venv", venv], env)
        step([py, "-m", "pip", "install", "-q", "--no-compile", "-c", CONSTRAINTS,
              f"llama-stack=={VERSION}", f"llama-stack-client=={VERSION}"], env)
    done = subprocess.run(
        [str(py), "-c", ("import sys, importlib.metadata as m; "
                         "print('%d.%d' % sys.version_info[:2], m.version('llama-stack'))")],
        capture_output=True, text=True, env=env, check=False)
    if done.stdout.split() != ["3.12", VERSION]:
        sys.exit(f"{venv} is not Python 3.12 with llama-stack {VERSION} "
                 f"({done.stdout.strip() or done.stderr.strip()}): pass another --venv")


def install(venv: Path, src: Path, packages: dict[str, str], env: dict[str, str]) -> None:
    """pip-install the two packages into the venv, unless these very files already are."""
    stamp = src / ".installed"
    digest = hashlib.sha256(json.dumps([str(venv), packages], sort_keys=True).encode()).hexdigest()
    py = venv / "bin" / "python"
    importable = subprocess.run(
        [str(py), "-c", "import llama_stack_api_weather, llama_stack_provider_kaze"],
        capture_output=True, env=env, check=False).returncode == 0
    if importable and stamp.is_file() and stamp.read_text() == digest:
        return
    folders = sorted({name.split("/")[0] for name in packages})
    step([py, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
          *(src / f for f in folders)], env)
    # --no-deps: their dependencies (llama-stack, pydantic, aiohttp) are llama-stack's own,
    # already in the venv at the constraints' versions; the import below checks them.
    subprocess.run([str(py), "-c", "import llama_stack_api_weather, llama_stack_provider_kaze"],
                   env=env, check=True)
    stamp.write_text(digest)


def get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGINT (uvicorn's graceful stop), then SIGTERM, then SIGKILL; the exit code."""
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/ls/venv"),
                        help="Llama Stack's venv; built when missing (default: %(default)s)")
    parser.add_argument("--home", type=Path, default=Path("/tmp/ls/home"),
                        help="the private HOME and ~/.llama for Llama Stack (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8322, help="default: %(default)s")
    parser.add_argument("--python", help="the Python 3.12 to build the venv with")
    parser.add_argument("--logging", default="all=warning",
                        help="LLAMA_STACK_LOGGING (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="start the server, check the GET, stop it")
    args = parser.parse_args()
    venv, home = args.venv.absolute(), args.home.absolute()
    env = clean_env(home)

    home_files, packages = files(args.port)
    write(home, home_files)
    write(home / "src", packages)
    ensure_venv(venv, args.python, env)
    install(venv, home / "src", packages, env)

    if port_taken(args.port):
        sys.exit(f"something already listens on 127.0.0.1:{args.port}")
    env["LLAMA_STACK_LOGGING"] = args.logging
    command = [str(venv / "bin" / "llama"), "stack", "run", str(home / ".llama" / "run-byoa.yaml"),
               "--port", str(args.port)]
    print("$", shlex.join([f"HOME={home}", f"LLAMA_STACK_CONFIG_DIR={home / '.llama'}",
                           f"LLAMA_STACK_LOGGING={args.logging}", *command]), flush=True)
    # Its own session: Ctrl-C reaches this process only, which stops the server once.
    proc = subprocess.Popen(command, env=env, cwd=home, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    url = f"http://127.0.0.1:{args.port}"
    try:
        started, deadline = time.monotonic(), time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                sys.exit(f"llama stack run exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("Llama Stack did not answer /v1/health in 180 s")
            try:
                if get(args.port, "/v1/health", 1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        status, body = get(args.port, "/v1/weather/locations")
        if status != 200 or json.loads(body) != EXPECTED:
            raise SystemExit(f"GET {url}/v1/weather/locations answered {status} {body!r}, "
                             f"not {json.dumps(EXPECTED)}")
        version = json.loads(get(args.port, "/v1/version")[1]).get("version", "?")
        print(f"Llama Stack {version} (pid {proc.pid}) ready in {time.monotonic() - started:.1f} s "
              f"at {url}: GET /v1/weather/locations -> {body.decode()}", flush=True)
        if args.check:
            return
        print(f"serving on {url}; bench it with: .venv/bin/python bench/run.py --llama-stack {url}\n"
              "Ctrl-C stops it.", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        code = stop(proc)
        print(f"Llama Stack stopped (exit {code})", flush=True)


if __name__ == "__main__":
    main()
