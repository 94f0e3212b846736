"""The embedded default: the weather API with its kaze provider."""

from __future__ import annotations


def test_locations(client):
    response = client.get("/v1/weather/locations")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.data == b'{"locations":["Paris","Tokyo"]}'


def test_wrong_method_is_405_with_allow(client):
    response = client.post("/v1/weather/locations")
    assert response.status_code == 405
    assert response.json == {"detail": "Method Not Allowed"}
    assert "GET" in response.headers["Allow"]


def test_unknown_path_is_404(client):
    response = client.get("/v1/weather/nope")
    assert response.status_code == 404
    assert response.json == {"detail": "Not Found"}


def test_head_and_options(client):
    head = client.head("/v1/weather/locations")
    assert head.status_code == 200
    assert head.data == b""
    options = client.options("/v1/weather/locations")
    assert options.status_code in (200, 204)
    assert "GET" in options.headers["Allow"]
