"""Llama Stack's own APIs, served by stackflask with the real Llama Stack 0.2.16.

A session fixture builds a Python 3.12 virtual environment with
``llama-stack==0.2.16``, ``llama-stack-client==0.2.16`` (pinned to the
third-party versions Llama Stack was released with) and this repository; each
test starts ``stackflask run`` from it on a loopback port:

- the Files API (``llama_stack.apis.files``) with Llama Stack's own
  ``inline::localfs`` provider, nothing of Llama Stack patched: a file
  uploaded, listed, retrieved, downloaded byte for byte and deleted, over raw
  HTTP and through ``llama-stack-client``;
- every other API protocol of Llama Stack, each with a provider that only
  raises: the same routes as Llama Stack's own route table, and an OpenAPI
  document that validates;
- the External APIs page's weather example, whose ``available_providers()``
  uses ``Api.weather`` of the installed Llama Stack on Python 3.12.

The scripts the environment runs are in ``tests/with_llama_stack/`` (not named
``llama_stack``: this folder is on ``sys.path`` under pytest, and a folder of
that name would pass for an installed Llama Stack).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, free_port
from openapi_spec_validator import validate

SCRIPTS = REPO / "tests" / "with_llama_stack"
CONSTRAINTS = REPO.parent / "shared" / "spec" / "llama-stack-0.2.16-constraints.txt"
#: What ``inline::localfs`` needs for its sqlite metadata store (its
#: ``pip_packages`` in Llama Stack's registry, but asyncpg, for PostgreSQL).
LOCALFS_PACKAGES = ["sqlalchemy[asyncio]", "aiosqlite"]
INSTALL_TIMEOUT = 400
TIMEOUT = 600

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIMEOUT)]


def python312() -> str:
    """A Python 3.12 interpreter: ``python3.12`` on the path, else pyenv's newest
    3.12; skips, saying what was tried, when there is none."""
    versions = Path.home() / ".pyenv" / "versions"
    pyenv = sorted(
        versions.glob("3.12*/bin/python"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
        reverse=True,
    )
    candidates = [c for c in [shutil.which("python3.12"), *map(str, pyenv)] if c]
    for candidate in candidates:
        # A pyenv shim is on the path even when its version is not selected; ask it.
        done = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if done.stdout.strip() == "True":
            return candidate
    reason = (
        "needs a Python 3.12 interpreter to install Llama Stack 0.2.16: none found "
        f"(tried python3.12 on PATH and {versions}/3.12*; found {candidates or 'nothing'})"
    )
    if os.environ.get("CI"):  # CI's machines have it: a missing one is a failure there
        pytest.fail(reason)
    pytest.skip(reason)


def clean_env(home: Path | None = None, pythonpath: Sequence[Path] = ()) -> dict[str, str]:
    """The environment without this process's venv and settings; ``HOME`` and
    ``PYTHONPATH`` as given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV")
        and not k.startswith(("STACKFLASK_", "FLASK_", "LLAMA_STACK_", "PYTEST_"))
    }
    if home is not None:
        env["HOME"] = str(home)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return env


def run(args: Sequence[str | Path], timeout: float = 120, **kwargs: Any) -> str:
    """Run ``args``; its stdout, or a failure with its output unless it exits 0."""
    done = subprocess.run(
        [os.fspath(a) for a in args], capture_output=True, text=True,
        timeout=timeout, check=False, **kwargs,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def llama_stack_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a Python 3.12 venv with Llama Stack 0.2.16, its
    client and this repository (editable) installed."""
    interpreter = python312()
    if not CONSTRAINTS.is_file():
        pytest.fail(
            f"{CONSTRAINTS} is missing: the shared/ folder must sit beside the repository "
            "(it pins the versions Llama Stack 0.2.16 was released with)"
        )
    folder = tmp_path_factory.mktemp("llama-stack-venv")
    started = time.monotonic()
    run([interpreter, "-m", "venv", folder], env=clean_env())
    bin_dir = folder / ("Scripts" if sys.platform == "win32" else "bin")
    run(
        # --no-compile: a fifth of the install's time; servers compile what they import.
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", "-c", CONSTRAINTS,
         "llama-stack==0.2.16", "llama-stack-client==0.2.16", *LOCALFS_PACKAGES, "-e", REPO],
        timeout=INSTALL_TIMEOUT, env=clean_env(),
    )
    print(f"Python 3.12 venv with llama-stack 0.2.16: {time.monotonic() - started:.1f} s")
    return bin_dir


def serve(start: Any, bin_dir: Path, config: Path, pythonpath: Sequence[Path] = ()) -> Any:
    """``stackflask run`` of the venv for ``config``, ready; ``HOME`` beside the config."""
    port = free_port()
    home = config.parent / "home"
    home.mkdir(exist_ok=True)
    return start(
        [str(bin_dir / "stackflask"), "run", "--config", str(config), "--port", str(port)],
        port, cwd=config.parent, env=clean_env(home, pythonpath),
    )


# -- the Files API with Llama Stack's inline::localfs ---------------------------


def files_stack(root: Path) -> Path:
    (root / "apis.d").mkdir()
    (root / "apis.d" / "files.yaml").write_text(yaml.safe_dump({
        "module": "llama_stack.apis.files", "name": "files", "protocol": "Files",
        "api_dependencies": [], "pip_packages": [],
    }))
    localfs = root / "providers.d" / "inline" / "files"
    localfs.mkdir(parents=True)
    (localfs / "localfs.yaml").write_text(yaml.safe_dump({
        "module": "llama_stack.providers.inline.files.localfs",
        "config_class": "llama_stack.providers.inline.files.localfs.LocalfsFilesImplConfig",
        "pip_packages": LOCALFS_PACKAGES,
        "api_dependencies": [],
        "optional_api_dependencies": [],
    }))
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump({
        "version": "2",
        "image_name": "llama-stack-files",
        "apis": ["files"],
        "providers": {"files": [{
            "provider_id": "localfs",
            "provider_type": "inline::localfs",
            "config": {
                "storage_dir": str(root / "storage"),
                "metadata_store": {"type": "sqlite", "db_path": str(root / "files_metadata.db")},
            },
        }]},
        "external_apis_dir": "apis.d",
        "external_providers_dir": "providers.d",
    }))
    return config


#: Every byte value, and what a multipart parser could trip on, past 1 MiB.
PAYLOAD = bytes(range(256)) * 4096 + b"\r\n--boundary--\r\n\x00end"


def test_files_api_with_localfs_over_http_and_the_client(llama_stack_venv, start, tmp_path):
    server = serve(start, llama_stack_venv, files_stack(tmp_path))
    files_url = server.url("/v1/openai/v1/files")

    upload = requests.post(
        files_url,
        files={"file": ("data.bin", PAYLOAD, "application/octet-stream")},
        data={"purpose": "assistants"},
        timeout=30,
    )
    assert upload.status_code == 200, (upload.text, server.output())
    created = upload.json()
    assert created["id"].startswith("file-")
    assert {k: created[k] for k in ("object", "bytes", "filename", "purpose")} == {
        "object": "file", "bytes": len(PAYLOAD), "filename": "data.bin", "purpose": "assistants",
    }
    assert created["expires_at"] > created["created_at"] > 0
    stored = list((tmp_path / "storage").iterdir())
    assert [p.name for p in stored] == [created["id"]]
    assert stored[0].read_bytes() == PAYLOAD

    listed = requests.get(files_url, timeout=10)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "data": [created], "has_more": False, "first_id": created["id"],
        "last_id": created["id"], "object": "list",
    }
    retrieved = requests.get(f"{files_url}/{created['id']}", timeout=10)
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.json() == created

    content = requests.get(f"{files_url}/{created['id']}/content", timeout=30)
    assert content.status_code == 200, content.text
    assert content.content == PAYLOAD
    assert content.headers["Content-Type"] == "application/octet-stream"
    assert content.headers["Content-Disposition"] == 'attachment; filename="data.bin"'

    deleted = requests.delete(f"{files_url}/{created['id']}", timeout=10)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert list((tmp_path / "storage").iterdir()) == []
    gone = requests.get(f"{files_url}/{created['id']}", timeout=10)
    assert gone.status_code == 400
    assert gone.json() == {"detail": f"Invalid value: File with id {created['id']} not found"}
    assert requests.get(files_url, timeout=10).json()["data"] == []

    text = "Llama Stack's Files API, through stackflask: é, 東京, 🦙\n" * 100
    upload_file = tmp_path / "notes.txt"
    upload_file.write_bytes(text.encode())
    output = run(
        [llama_stack_venv / "python", SCRIPTS / "files_client.py", server.url(""), upload_file],
        timeout=60, env=clean_env(),
    )
    seen = json.loads(output)
    file_id = seen["created"]["id"]
    assert seen["created"]["bytes"] == len(text.encode())
    assert seen["created"]["filename"] == "notes.txt"
    assert seen["created"]["purpose"] == "assistants"
    assert seen["listed"] == [file_id]
    assert seen["retrieved"] == seen["created"]
    assert seen["content"] == text
    assert seen["raw_type"] == "application/octet-stream"
    assert seen["deleted"] == {"id": file_id, "object": "file", "deleted": True}
    assert seen["after"] == []
    assert base64.b64decode(seen["raw"]) == text.encode()
    assert server.stop() == 0, server.output()


# -- every other API of Llama Stack, with a provider that only raises ------------


#: The APIs of Llama Stack 0.2.16's route table but its inspect and providers.
LLAMA_STACK_APIS = {
    "agents", "benchmarks", "datasetio", "datasets", "eval", "files", "inference", "models",
    "post_training", "safety", "scoring", "scoring_functions", "shields", "telemetry",
    "tool_groups", "tool_runtime", "vector_dbs", "vector_io",
}


def as_served(method: str) -> str:
    """The method Llama Stack's server serves a webmethod under: GET and DELETE
    as declared, anything else as POST."""
    return method if method in ("GET", "DELETE") else "POST"


def test_every_llama_stack_api_serves_llama_stacks_routes(llama_stack_venv, start, tmp_path):
    every = tmp_path / "every"
    every.mkdir()
    run([llama_stack_venv / "python", SCRIPTS / "write_every_api.py", every],
        timeout=60, env=clean_env(tmp_path))
    table: dict[str, list[list[str]]] = json.loads((every / "routes.json").read_text())
    server = serve(start, llama_stack_venv, every / "run.yaml", [SCRIPTS])

    listed = requests.get(server.url("/v1/inspect/routes"), timeout=10).json()["data"]
    served = [r for r in listed if r["provider_types"]]
    builtin = [r for r in listed if not r["provider_types"]]
    assert {t for r in served for t in r["provider_types"]} == {"inline::raising"}

    ours = {api: rows for api, rows in table.items() if api not in ("inspect", "providers")}
    assert set(ours) == LLAMA_STACK_APIS and all(ours.values())
    # Llama Stack's inspect and providers APIs are stackflask's built-in routes;
    # stackflask's other two, /openapi.json and /docs, are outside /v1.
    expected_builtin = {
        (method, path) for api in ("inspect", "providers") for method, path, _ in table[api]
    }
    assert expected_builtin == {
        (r["method"], r["route"]) for r in builtin if r["route"].startswith("/v1/")
    }
    # Llama Stack serves non-GET, non-DELETE webmethods as POST; stackflask serves
    # the declared method. Llama Stack 0.2.16 declares only GET, POST and DELETE,
    # so the two tables are equal as they are, and equal under the mapping.
    declared = {(path, as_served(method)): method for rows in ours.values() for _, path, method in rows}
    expected = [(method, path) for rows in ours.values() for method, path, _ in rows]
    assert len(expected) == len(set(expected)), "Llama Stack's table lists a route twice"
    got = [(as_served(r["method"]), r["route"]) for r in served]
    assert len(got) == len(set(got)), "stackflask lists a route twice"
    assert sorted(got) == sorted(expected)
    assert {(r["route"], as_served(r["method"])): r["method"] for r in served} == declared

    # Validated here: openapi-spec-validator is in this environment (the test extra).
    document = requests.get(server.url("/openapi.json"), timeout=30).json()
    validate(document)
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert {(m, re.sub(r"\{(\w+):path\}", r"{\1}", p)) for m, p in expected} <= documented

    raised = requests.get(server.url("/v1/models"), timeout=10)
    assert raised.status_code == 501
    assert raised.json() == {
        "detail": "Not implemented: list_models is not implemented by the raising provider"
    }
    assert server.stop() == 0, server.output()


# -- the External APIs page's weather example, with the real Api ---------------

#: As the page writes it: Llama Stack's own ``RemoteProviderSpec`` requires
#: ``provider_type`` and ``config_class`` beside the adapter's.
WEATHER_API = '''
from typing import Protocol

from llama_stack.providers.datatypes import AdapterSpec, Api, ProviderSpec, RemoteProviderSpec
from llama_stack.schema_utils import webmethod


def available_providers() -> list[ProviderSpec]:
    return [
        RemoteProviderSpec(
            api=Api.weather,
            provider_type="remote::kaze",
            config_class="ls_weather_kaze.KazeProviderConfig",
            adapter=AdapterSpec(
                adapter_type="kaze",
                module="ls_weather_kaze",
                config_class="ls_weather_kaze.KazeProviderConfig",
            ),
        ),
    ]


class WeatherProvider(Protocol):
    @webmethod(route="/weather/locations", method="GET")
    async def get_available_locations(self) -> dict[str, list[str]]: ...
'''

WEATHER_KAZE = '''
from pydantic import BaseModel

from llama_stack.providers.datatypes import Api


class KazeProviderConfig(BaseModel):
    base_url: str = "https://api.kaze.io/v1"


class WeatherKazeAdapter:
    async def get_available_locations(self) -> dict[str, list[str]]:
        return {"locations": ["Paris", "Tokyo"], "api": [Api("weather").value]}


async def get_adapter_impl(config, deps):
    return WeatherKazeAdapter()
'''


def test_api_weather_of_the_installed_llama_stack_on_python_312(llama_stack_venv, start, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ls_weather_api.py").write_text(WEATHER_API)
    (tmp_path / "src" / "ls_weather_kaze.py").write_text(WEATHER_KAZE)
    (tmp_path / "apis.d").mkdir()
    (tmp_path / "apis.d" / "weather.yaml").write_text(
        "module: ls_weather_api\nname: weather\nprotocol: WeatherProvider\n"
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "apis": ["weather"],
        "providers": {"weather": [{"provider_id": "kaze", "provider_type": "remote::kaze"}]},
        "external_apis_dir": "apis.d",
    }))
    server = serve(start, llama_stack_venv, config, [tmp_path / "src"])
    response = requests.get(server.url("/v1/weather/locations"), timeout=10)
    assert response.status_code == 200, server.output()
    assert response.json() == {"locations": ["Paris", "Tokyo"], "api": ["weather"]}
    assert server.stop() == 0, server.output()
