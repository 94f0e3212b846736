"""``/docs``: Swagger UI from the ``docs`` extra, else the plain page, both
offline; and the document's security, true to what the server asks of a client."""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from conftest import waitress_in_thread
from openapi_spec_validator import validate
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response as WerkzeugResponse

API = '''
from typing import Protocol

from stackflask import webmethod


class Ledger(Protocol):
    @webmethod(route="/ledger/rates", method="GET", public=True)
    async def rates(self) -> dict[str, float]:
        """The exchange rates, for anyone."""
        ...

    @webmethod(route="/ledger/balance", method="GET", required_scope="ledger.read")
    async def balance(self) -> int:
        """The balance, for those with the scope."""
        ...

    @webmethod(route="/ledger/entries", method="GET")
    async def entries(self, limit: int = 10) -> list[str]:
        """The entries, for any token."""
        ...

    @webmethod(route="/ledger/entries/{entry_id}", method="GET")
    async def entry(self, entry_id: int) -> str:
        """One entry."""
        ...
'''

IMPL = '''
class Ledger:
    async def rates(self):
        return {"EUR": 1.0}

    async def balance(self):
        return 42

    async def entries(self, limit=10):
        return ["rent", "food"][:limit]

    async def entry(self, entry_id):
        return "rent"


def get_provider_impl(config, deps):
    return Ledger()
'''

TOKEN = "docs-ui-token"
AUTH = {
    "tokens": [{"token": TOKEN, "principal": "reader", "scopes": ["ledger.read"]}],
    "public": ["/docs", "/openapi.json", "/v1/health"],
}
BEARER = {"type": "http", "scheme": "bearer"}
MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
#: What each page loads, beyond its own assets: where it finds the document.
SPEC_URL = {
    "swagger": re.compile(r'\burl: "([^"]+)"'),
    "plain": re.compile(r'\bfetch\("([^"]+)"\)'),
}


class Links(HTMLParser):
    """Every URL a page loads or links to: ``src`` and ``href`` of any tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def links(page: str) -> list[str]:
    parser = Links()
    parser.feed(page)
    return parser.urls


@pytest.fixture(params=["swagger", "plain"])
def page(request, monkeypatch):
    """Which page ``/docs`` serves: ``swagger`` with flask-swagger-ui, ``plain``
    as if it were not installed (its import fails from here on)."""
    if request.param == "plain":
        monkeypatch.setitem(sys.modules, "flask_swagger_ui", None)
    return request.param


@pytest.fixture
def ledger(stack_files):
    """``ledger(server=None)``: the path of a run config serving ``Ledger``."""
    return stack_files.serve_api("ledger", "Ledger", API, IMPL)


def fetch_page(get, base: str, kind: str) -> tuple[str, str]:
    """The page at ``{base}docs`` with every asset it loads fetched and
    checked; the URL of the document it reads."""
    page_url = urljoin(base, "docs")
    response = get(page_url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert "http://" not in page and "https://" not in page
    assets = [urljoin(page_url, u) for u in links(page) if not u.endswith(".json")]
    assert assets
    scripts = page
    for url in assets:
        assert url.startswith(urljoin(base, "docs/")), url
        asset = get(url)
        assert asset.status_code == 200, url
        media_type = MEDIA_TYPES[url[url.rindex("."):]]
        assert asset.headers["Content-Type"].split(";")[0] == media_type, url
        if media_type == "text/css":
            assert not re.search(r"url\(\s*['\"]?(https?:)?//", asset.text), url
        if media_type == "text/javascript":
            scripts += asset.text
    found = SPEC_URL[kind].search(scripts)
    assert found, f"the {kind} page does not name its document"
    return page, urljoin(page_url, found.group(1))


def test_docs_page_loads_only_its_own_assets(page, make_app):
    client = make_app().test_client()
    html, spec_url = fetch_page(
        lambda url: client.get(urlsplit(url).path), "http://localhost/", page
    )
    assert spec_url == "http://localhost/openapi.json"
    if page == "swagger":
        assert "swagger-ui-bundle.js" in html
        assert client.get("/docs/docs.js").status_code == 404
    else:
        assert "docs/docs.js" in html
        assert client.get("/docs/swagger-ui-bundle.js").status_code == 404
    for name in ("docs.html", "swagger-ui.html", "index.css", "..%2Fopenapi.py", "LICENSE"):
        assert client.get(f"/docs/{name}").status_code == 404, name


@pytest.mark.parametrize("path", ["/docs", "/docs/swagger-ui-bundle.js"])
def test_a_second_visit_is_a_304(make_app, path):
    client = make_app().test_client()
    first = client.get(path)
    again = client.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and not again.data


def test_an_old_flask_swagger_ui_falls_back_with_a_warning(make_app, monkeypatch, caplog):
    from stackflask import docspage

    monkeypatch.setattr(docspage.metadata, "version", lambda name: "4.11.1")
    client = make_app().test_client()
    assert "docs/docs.js" in client.get("/docs").text
    assert "/docs: flask-swagger-ui 4.11.1 is older than 5; serving the plain page" in caplog.text
    assert "pip install 'stackflask[docs]'" in caplog.text


def test_real_server_serves_docs_and_its_assets(page, make_app):
    app = make_app()
    with waitress_in_thread(app) as url, requests.Session() as http:
        _, spec_url = fetch_page(lambda u: http.get(u, timeout=5), url + "/", page)
        assert spec_url == url + "/openapi.json"
        assert http.get(spec_url, timeout=5).json()["servers"] == [{"url": "/"}]


def test_behind_a_prefix_every_url_stays_under_it(page, make_app):
    """Mounted at ``/api`` (Werkzeug's dispatcher sets ``SCRIPT_NAME``, as a
    proxy with ``ProxyFix(x_prefix=1)`` does): the page, its assets, the
    document and the requests "Try it out" sends all stay under ``/api``."""
    app = make_app()
    mounted = DispatcherMiddleware(WerkzeugResponse("not here", 404), {"/api": app})
    with waitress_in_thread(mounted) as url, requests.Session() as http:
        base = url + "/api/"
        _, spec_url = fetch_page(lambda u: http.get(u, timeout=5), base, page)
        assert spec_url == base + "openapi.json"
        document = http.get(spec_url, timeout=5).json()
        assert document["servers"] == [{"url": "/api"}]
        server = urljoin(spec_url, document["servers"][0]["url"])
        assert http.get(server + "/v1/health", timeout=5).json() == {"status": "OK"}
        assert http.get(url + "/v1/health", timeout=5).status_code == 404


# -- security in the document ------------------------------------------------------------


def test_without_auth_the_document_has_no_security(client):
    document = client.get("/openapi.json").json
    assert "securitySchemes" not in document.get("components", {})
    assert "security" not in document
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    assert not [op for op in operations if "security" in op or "401" in op["responses"]]


def test_with_auth_the_document_requires_the_bearer_scheme(ledger, make_app):
    client = make_app(ledger({"auth": AUTH})).test_client()
    document = client.get("/openapi.json").json
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["bearerAuth"]
    assert {k: schemes["bearerAuth"][k] for k in BEARER} == BEARER
    assert document["security"] == [{"bearerAuth": []}]
    paths = document["paths"]
    rates, balance = paths["/v1/ledger/rates"]["get"], paths["/v1/ledger/balance"]["get"]
    entries = paths["/v1/ledger/entries"]["get"]
    assert rates["security"] == [] and "401" not in rates["responses"]
    assert balance["security"] == [{"bearerAuth": ["ledger.read"]}]
    assert "ledger.read" in balance["responses"]["403"]["description"]
    assert "security" not in entries and "401" in entries["responses"]
    # server.auth.public paths need no token; the other built-in routes do
    assert paths["/v1/health"]["get"]["security"] == []
    assert "security" not in paths["/v1/providers"]["get"]
    assert "401" in paths["/v1/providers/{provider_id}"]["get"]["responses"]


def test_docs_need_a_token_unless_public_but_their_assets_never(ledger, make_app):
    auth = {**AUTH, "public": []}
    client = make_app(ledger({"auth": auth})).test_client()
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    page = client.get("/docs", headers=bearer).text
    for url in links(page):
        if not url.endswith(".json"):
            assert client.get(urljoin("/docs", url)).status_code == 200, url
    assert client.get("/openapi.json", headers=bearer).status_code == 200


def test_try_it_out_requests_work_as_the_document_says(page, ledger, make_app):
    """What Swagger UI does, over HTTP: read the page, then the document it
    names; send each operation to the document's server, with the token
    entered under "Authorize" where the operation requires the scheme. Every
    operation answers 200 with it, and 401 without it exactly where the
    document says a token is needed."""
    app = make_app(ledger({"auth": AUTH}))
    with waitress_in_thread(app) as url, requests.Session() as http:
        _, spec_url = fetch_page(lambda u: http.get(u, timeout=5), url + "/", page)
        document = http.get(spec_url, timeout=5).json()
        server = urljoin(spec_url, document["servers"][0]["url"]).rstrip("/")
        tried = set()
        for path, operations in document["paths"].items():
            needs_token = bool(operations["get"].get("security", document["security"]))
            target = server + path.replace("{entry_id}", "1").replace("{provider_id}", "ledger")
            anonymous = http.get(target, timeout=5)
            assert anonymous.status_code == (401 if needs_token else 200), path
            authorized = http.get(target, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            assert authorized.status_code == 200, path
            tried.add(path)
        assert "/v1/ledger/entries/{entry_id}" in tried and "/v1/ledger/rates" in tried


def test_scope_in_the_document_is_the_one_the_server_checks(ledger, make_app):
    auth = {**AUTH, "tokens": [*AUTH["tokens"], {"token": "no-scope", "principal": "guest"}]}
    client = make_app(ledger({"auth": auth})).test_client()
    operation = client.get("/openapi.json").json["paths"]["/v1/ledger/balance"]["get"]
    [scope] = operation["security"][0]["bearerAuth"]
    refused = client.get("/v1/ledger/balance", headers={"Authorization": "Bearer no-scope"})
    assert refused.status_code == 403
    assert refused.json == {"detail": f"Permission denied: scope {scope!r} required"}
