"""The HTTP calls token verifiers make: blocking, bounded, never redirected.

Request time, from the request's own thread (standard library only). Every call
has a deadline, reads at most :data:`MAX_ANSWER_BYTES`, and follows no redirect
(a redirect would carry the token, or the client secret, to another place).
A network failure, a timeout, or an answer that is not JSON is a
:class:`~stackflask.auth.VerifierUnavailable` naming the endpoint without its
query or password; HTTP error statuses are returned, for the verifier to judge.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .auth import VerifierUnavailable
from .redaction import mask_url_passwords

MAX_ANSWER_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """An endpoint's status and JSON body (``None`` unless the status is 2xx)."""

    status: int
    body: Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def shown(url: str) -> str:
    """``url`` fit for a log line: no query, no fragment, no password."""
    parts = urlsplit(url)
    return str(mask_url_passwords(urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))))


def call(
    what: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """``GET`` ``url`` (``POST`` with ``data``); ``what`` names the endpoint in errors
    (``"the JWKS"``). The whole call, connecting and reading, ends within about
    ``timeout`` seconds."""
    opener = urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, data=data, headers={
        "Accept": "application/json", "User-Agent": "stackflask", **(headers or {}),
    })
    deadline = time.monotonic() + timeout
    where = f"{what} at {shown(url)}"
    try:
        try:
            with opener.open(request, timeout=timeout) as response:
                status, raw = response.status, _read(response, deadline, where)
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, None)
    except VerifierUnavailable:
        raise
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            raise VerifierUnavailable(f"{where} did not answer within {timeout:g} s") from None
        raise VerifierUnavailable(f"{where} cannot be reached: {reason}") from None
    if not 200 <= status < 300:
        return Answer(status, None)
    try:
        return Answer(status, json.loads(raw))
    except ValueError:
        raise VerifierUnavailable(f"{where} answered {status} with a body that is not JSON") from None


def _read(response: http.client.HTTPResponse, deadline: float, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(_CHUNK):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise VerifierUnavailable(f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)
