"""Redaction: no secret in what the server shows or logs.

Request time; pure (no Flask, no pydantic). One mechanism for every place a
secret could leave: ``/v1/providers`` shows each provider's config through
:func:`redact`, health messages go through :func:`mask_url_passwords`, and a
rejected ``X-LlamaStack-Provider-Data`` header is logged as
:func:`describe_rejection`, which names fields and error types, never values.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "********"

#: A config value whose key contains one of these (any case) is a secret.
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "auth", "private")

#: ``scheme://user:password@``: the password runs, as ``urllib.parse`` reads a
#: URL, to the last ``@`` of the authority (which ends at ``/``, ``?`` or ``#``).
#: The scheme's length is bounded so that no text takes more than linear time.
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]{0,40}://[^\s:/?#]*:)[^\s/?#]+(?=@)"
)

#: The most problems of one rejection that are named in its log line.
MAX_NAMED = 10


def redact(value: Any, built: Any = None) -> Any:
    """``value`` (a provider's config mapping) ready to show.

    At any depth: an entry whose key names a secret (:data:`SECRET_WORDS`) and
    every pydantic ``SecretStr`` / ``SecretBytes`` become :data:`REDACTED`, and
    the password of every URL in a string is masked. ``built`` is the config
    object the provider was given (its ``config_class`` instance): an entry it
    holds as a pydantic secret is masked whatever its key.
    """
    if is_pydantic_secret(value) or is_pydantic_secret(built):
        return REDACTED
    if isinstance(value, str):
        return mask_url_passwords(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_key(k) else redact(v, _member(built, k))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        parts = built if isinstance(built, (list, tuple)) and len(built) == len(value) else ()
        return [redact(v, parts[i] if parts else None) for i, v in enumerate(value)]
    return value


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a secret: ``apiKey``, ``ACCESS_TOKEN``, ``private_key``..."""
    lowered = str(key).lower()
    return any(word in lowered for word in SECRET_WORDS)


def is_pydantic_secret(value: Any) -> bool:
    """Whether ``value`` is a pydantic ``SecretStr``, ``SecretBytes`` or ``Secret``
    (v1 or v2), found without importing pydantic."""
    return any(
        cls.__module__.startswith("pydantic") and "Secret" in cls.__name__
        for cls in type(value).__mro__
    )


def mask_url_passwords(value: Any) -> Any:
    """``value`` with the password of every URL in its strings masked, at any depth:
    ``postgres://u:pa55@h/db`` -> ``postgres://u:********@h/db``."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", value) if "://" in value else value
    if isinstance(value, dict):
        return {k: mask_url_passwords(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_url_passwords(v) for v in value]
    return value


def describe_rejection(exc: BaseException) -> str:
    """What was wrong with client data a validator rejected, for a log line: the
    fields and error types of a pydantic or marshmallow error, else the
    exception's type; never a value the client sent."""
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic (v1 and v2)
        try:
            named = [
                f"{_field(error.get('loc', ()))} ({error.get('type', '?')})"
                for error in errors()
            ]
        except Exception:  # not pydantic's errors() after all
            named = []
        if named:
            return f"{type(exc).__name__}: {_first(named)}"
    messages = getattr(exc, "messages", None)
    if isinstance(messages, dict) and messages:  # marshmallow
        return f"{type(exc).__name__}: {_first([_field([key]) for key in messages])}"
    return type(exc).__name__


def _member(built: Any, key: Any) -> Any:
    if built is None:
        return None
    if isinstance(built, dict):
        return built.get(key)
    try:
        return getattr(built, str(key), None)
    except Exception:  # a property that raises is no secret of ours
        return None


def _field(loc: Any) -> str:
    # repr: a field name may be a key the client chose; it stays on one line
    return repr(".".join(str(part) for part in loc)[:100]) if loc else "(the whole object)"


def _first(named: list[str]) -> str:
    more = len(named) - MAX_NAMED
    return ", ".join(named[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")
