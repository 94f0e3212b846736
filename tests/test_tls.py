"""``server.tls_*``: served by gunicorn through ``stackflask.gunicorn_conf``,
refused everywhere else, never ignored.

The certificates are made here with ``cryptography``: a CA, a server
certificate for 127.0.0.1 and a client certificate, both signed by the CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, Server, free_port, script, server_env
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stackflask import create_app
from stackflask.problems import StartupError
from stackflask.tls import TLS_ENV

GUNICORN_CONF = "python:stackflask.gunicorn_conf"
READY_TIMEOUT = 20.0


# -- certificates --------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return path


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, usage: Any = None,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("stackflask test CA", ca_key, _name("stackflask test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("127.0.0.1", server_key, ca.subject, ca_key,
                    usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("a client", client_key, ca.subject, ca_key,
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=_pem(ca, folder / "ca.pem"),
        cert=_pem(server, folder / "server.pem"),
        key=_write_key(server_key, folder / "server.key"),
        client_cert=_pem(client, folder / "client.pem"),
        client_key=_write_key(client_key, folder / "client.key"),
    )


# -- run configs and servers --------------------------------------------------------


def write_run_config(folder: Path, server: dict[str, Any]) -> Path:
    """The embedded default (weather with kaze) with ``server``."""
    data = yaml.safe_load((REPO / "config" / "run.yaml").read_text())
    data["external_apis_dir"] = str(REPO / "config" / "apis.d")
    data["external_providers_dir"] = str(REPO / "config" / "providers.d")
    data["server"] = server
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tls_server(pki: Pki, port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "tls_certfile": str(pki.cert),
            "tls_keyfile": str(pki.key), **extra}


@pytest.fixture
def gunicorn(tmp_path: Path) -> Any:
    """``gunicorn(config, *args)``: gunicorn with stackflask's config module, on
    ``config``; a :class:`conftest.Server` (with its own HOME), stopped at teardown."""
    servers: list[Server] = []

    def start(config: Path, *args: str, port: int = 0) -> Server:
        command = [script("gunicorn"), "-c", GUNICORN_CONF, "--graceful-timeout", "5",
                   *args, "app:create_app()"]
        server = Server(command, port, tmp_path / f"gunicorn-{len(servers)}.log", REPO,
                        server_env(STACKFLASK_CONFIG=str(config)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_https(server: Server, url: str, **tls: Any) -> requests.Response:
    """The first answer of ``url`` over HTTPS, verified with ``tls``."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.proc.returncode}:\n{server.output()}")
        try:
            return requests.get(url, timeout=2, **tls)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer over HTTPS:\n{server.output()}")
            time.sleep(0.1)


def wait_exit(server: Server, timeout: float = READY_TIMEOUT) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn did not exit:\n{server.output()}")


# -- under gunicorn ----------------------------------------------------------------


def test_gunicorn_serves_https_with_the_configured_certificate(pki, gunicorn, tmp_path):
    port = free_port()
    server = gunicorn(write_run_config(tmp_path, tls_server(pki, port)), port=port)
    response = wait_https(server, f"https://127.0.0.1:{port}/v1/health", verify=str(pki.ca))
    assert response.status_code == 200
    assert response.json() == {"status": "OK"}
    assert requests.get(f"https://127.0.0.1:{port}/v1/weather/locations", verify=str(pki.ca),
                        timeout=5).json() == {"locations": ["Paris", "Tokyo"]}
    # bound from server.host and server.port; not answering in clear text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
    # the certificate is the one configured: an unknown CA is refused
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/v1/health", timeout=2)


def test_gunicorn_requires_a_client_certificate_with_tls_cafile(pki, gunicorn, tmp_path):
    port = free_port()
    config = write_run_config(tmp_path, tls_server(pki, port, tls_cafile=str(pki.ca)))
    server = gunicorn(config, port=port)
    url = f"https://127.0.0.1:{port}/v1/health"
    client = (str(pki.client_cert), str(pki.client_key))
    assert wait_https(server, url, verify=str(pki.ca), cert=client).status_code == 200
    with pytest.raises(requests.ConnectionError):  # SSLError is one: the handshake fails
        requests.get(url, verify=str(pki.ca), timeout=5)
    # a certificate the CA did not sign is refused too
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _issue("stranger", stranger_key, _name("stranger"), stranger_key,
                      usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pair = (str(_pem(stranger, tmp_path / "stranger.pem")),
            str(_write_key(stranger_key, tmp_path / "stranger.key")))
    with pytest.raises(requests.ConnectionError):
        requests.get(url, verify=str(pki.ca), cert=pair, timeout=5)
    assert requests.get(url, verify=str(pki.ca), cert=client, timeout=5).status_code == 200


def test_command_line_bind_wins_over_server_port(gunicorn, tmp_path):
    configured, given = free_port(), free_port()
    server = gunicorn(write_run_config(tmp_path, {"port": configured}),
                      "-b", f"127.0.0.1:{given}", port=given)
    server.wait_ready()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{configured}/v1/health", timeout=2)


def test_gunicorn_conf_names_an_unusable_certificate(pki, gunicorn, tmp_path):
    port = free_port()
    missing = tmp_path / "missing.pem"
    server = gunicorn(write_run_config(tmp_path, tls_server(pki, port, tls_certfile=str(missing))))
    assert wait_exit(server) == 1
    assert (
        f"error: {tmp_path / 'run.yaml'}: server.tls_certfile, server.tls_keyfile: "
        f"cannot load {str(missing)!r} with {str(pki.key)!r}: No such file or directory"
    ) in server.output()


def test_gunicorn_without_stackflasks_config_refuses_tls(pki, tmp_path):
    """``gunicorn 'app:create_app()'`` alone would serve clear text: the workers refuse."""
    port = free_port()
    config = write_run_config(tmp_path, tls_server(pki, port))
    server = Server(
        [script("gunicorn"), "-b", f"127.0.0.1:{port}", "app:create_app()"], port,
        tmp_path / "gunicorn.log", REPO, server_env(STACKFLASK_CONFIG=str(config)),
    )
    try:
        assert wait_exit(server) != 0
    finally:
        server.stop()
    assert "this server cannot serve TLS" in server.output()


# -- refused elsewhere -------------------------------------------------------------


def test_stackflask_run_refuses_tls_in_one_line(pki, tmp_path):
    config = write_run_config(tmp_path, tls_server(pki, free_port(), tls_cafile=str(pki.ca)))
    result = subprocess.run(
        [script("stackflask"), "run", "--config", str(config)], cwd=tmp_path,
        env=server_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {config}: server.tls_certfile, server.tls_keyfile, server.tls_cafile: "
        "stackflask run serves with waitress, which has no TLS; serve with "
        "gunicorn -c python:stackflask.gunicorn_conf 'app:create_app()', or terminate TLS "
        "at a reverse proxy and remove these options (docs/deployment.md, TLS)"
    ]


def test_stackflask_validate_accepts_tls(pki, tmp_path):
    config = write_run_config(tmp_path, tls_server(pki, free_port()))
    result = subprocess.run(
        [script("stackflask"), "validate", "--config", str(config)], cwd=tmp_path,
        env=server_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


@pytest.fixture
def no_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TLS_ENV, raising=False)


def test_create_app_refuses_tls_it_cannot_know_is_served(pki, tmp_path, no_mark):
    config = write_run_config(tmp_path, tls_server(pki, free_port()))
    with pytest.raises(StartupError) as info:
        create_app(str(config))
    assert info.value.problems == [
        f"{config}: server.tls_certfile, server.tls_keyfile: this server cannot serve TLS "
        "(waitress-serve, flask run, and gunicorn without stackflask's config serve plain "
        "HTTP); serve with gunicorn -c python:stackflask.gunicorn_conf 'app:create_app()', "
        "or terminate TLS at a reverse proxy and remove these options "
        "(docs/deployment.md, TLS)"
    ]


def test_create_app_takes_tls_that_the_gunicorn_config_serves(pki, tmp_path, monkeypatch):
    config = write_run_config(tmp_path, tls_server(pki, free_port()))
    monkeypatch.setenv(TLS_ENV, json.dumps([str(pki.cert), str(pki.key), None]))
    app = create_app(str(config))
    app.extensions["stackflask"].shutdown()
    monkeypatch.setenv(TLS_ENV, json.dumps([str(pki.cert), str(tmp_path / "other.key"), None]))
    with pytest.raises(StartupError, match="gunicorn's config serves TLS with other files"):
        create_app(str(config))


def test_relative_tls_paths_resolve_against_the_run_config(pki, tmp_path, monkeypatch):
    config = write_run_config(tmp_path, {"tls_certfile": "pki/server.pem",
                                         "tls_keyfile": "pki/server.key"})
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(TLS_ENV, json.dumps([str(pki.cert), str(pki.key), None]))
    app = create_app(str(config))
    server = app.extensions["stackflask"].config.server
    assert (server.tls_certfile, server.tls_keyfile) == (pki.cert, pki.key)
    app.extensions["stackflask"].shutdown()


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"tls_certfile": "c.pem"},
         "server.tls_keyfile: tls_certfile and tls_keyfile go together: give both, or "
         "neither for plain HTTP."),
        ({"tls_keyfile": "k.pem"},
         "server.tls_certfile: tls_certfile and tls_keyfile go together: give both, or "
         "neither for plain HTTP."),
        ({"tls_cafile": "ca.pem"},
         "server.tls_cafile: client certificates need the server's own: give "
         "tls_certfile and tls_keyfile too."),
    ],
    ids=["certfile-alone", "keyfile-alone", "cafile-alone"],
)
def test_half_a_tls_setting_is_refused(tmp_path, no_mark, server, message):
    config = write_run_config(tmp_path, server)
    with pytest.raises(StartupError) as info:
        create_app(str(config))
    assert info.value.problems == [f"{config}: {message}"]


def test_no_tls_needs_no_mark(tmp_path, monkeypatch):
    monkeypatch.setenv(TLS_ENV, "anything")
    app = create_app(str(write_run_config(tmp_path, {"port": 8400})))
    app.extensions["stackflask"].shutdown()
