"""Fixtures that build real stacks from real files under ``tmp_path``."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackflask import create_app


class StackFiles:
    """Writes API and provider packages, ``apis.d``, ``providers.d`` and run configs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkgs = root / "pkgs"
        self.apis_dir = root / "apis.d"
        self.providers_dir = root / "providers.d"
        for d in (self.pkgs, self.apis_dir, self.providers_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.modules: set[str] = set()

    def module(self, dotted: str, source: str) -> Path:
        """Write module ``dotted`` (packages created as needed) with ``source``."""
        parts = dotted.split(".")
        folder = self.pkgs
        for part in parts[:-1]:
            folder = folder / part
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        path = folder / f"{parts[-1]}.py"
        if path.with_suffix("").is_dir():
            path = path.with_suffix("") / "__init__.py"
        path.write_text(textwrap.dedent(source))
        self.modules.add(parts[0])
        return path

    def api_spec(self, filename: str, data: dict[str, Any] | str) -> Path:
        path = self.apis_dir / filename
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def provider_file(self, kind: str, api: str, name: str, data: dict[str, Any] | str) -> Path:
        folder = self.providers_dir / kind / api
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def run_config(self, data: dict[str, Any] | str, filename: str = "run.yaml") -> Path:
        path = self.root / filename
        if not isinstance(data, str):
            data = {
                "external_apis_dir": "apis.d",
                "external_providers_dir": "providers.d",
                **data,
            }
            data = yaml.safe_dump(data)
        path.write_text(data)
        return path


@pytest.fixture
def stack_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    files = StackFiles(tmp_path)
    monkeypatch.syspath_prepend(str(files.pkgs))
    yield files
    for name in list(sys.modules):
        if name.split(".")[0] in files.modules:
            del sys.modules[name]


@pytest.fixture
def make_app() -> Any:
    """``create_app`` whose apps' providers are shut down after the test."""
    apps = []

    def make(config: Any = None) -> Any:
        app = create_app(config)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["stackflask"].shutdown()


@pytest.fixture
def app(make_app: Any) -> Any:
    """The embedded default; pytest-flask's ``client`` uses it."""
    return make_app()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
