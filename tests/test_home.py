"""The suite's servers leave the user's home folder alone.

Each server of the table runs through the ``start`` fixture, as the suite's
own server tests do, with ``HOME`` pointing at an empty folder that stands for
the user's; after the server has answered and stopped, the folder is still
empty. gunicorn 25.1 and later would make ``~/.gunicorn/gunicorn.ctl`` there
(its control socket) if the fixture did not give it a home of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import gunicorn
import pytest
import requests
from conftest import free_port, script


def gunicorn_makes_a_control_socket() -> bool:
    major, minor = (int(part) for part in re.findall(r"\d+", gunicorn.__version__)[:2])
    return (major, minor) >= (25, 1)


@pytest.mark.parametrize(
    "args",
    [
        ["gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "--graceful-timeout", "5",
         "app:create_app()"],
        ["stackflask", "run", "--port", "{port}"],
        ["waitress-serve", "--listen", "127.0.0.1:{port}", "--call", "app:create_app"],
    ],
    ids=["gunicorn", "stackflask-run", "waitress-serve"],
)
def test_servers_leave_home_alone(start, tmp_path, monkeypatch, args):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    port = free_port()
    server = start([script(args[0]), *(a.format(port=port) for a in args[1:])], port)
    assert requests.get(server.url("/v1/weather/locations"), timeout=5).status_code == 200
    server.stop()
    assert sorted(p.name for p in home.iterdir()) == [], server.output()
    private_home = server.home
    assert private_home is not None and not Path(private_home).exists()
    if args[0] == "gunicorn" and gunicorn_makes_a_control_socket():
        # The socket was made, in the server's own home: the check above is not vacuous.
        assert f"Control socket listening at {private_home}/.gunicorn/gunicorn.ctl" in server.output()
