"""Per-request data offered to providers: the ``X-LlamaStack-Provider-Data`` header.

Request time. The view sets a context variable in the WSGI thread; the event
loop bridge runs each provider coroutine in a copy of that context, so a
provider reads it with :func:`get_provider_data` (or, for packages written for
Llama Stack, ``self.get_request_provider_data()``) from inside its coroutine.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .auth import Principal, principal_var
from .importing import ImportProblem, import_object
from .redaction import describe_rejection

log = logging.getLogger("stackflask.request")

PROVIDER_DATA_HEADER = "X-LlamaStack-Provider-Data"

#: The current request's provider data, and the validator of the provider serving it.
_provider_data: contextvars.ContextVar[tuple[dict[str, Any] | None, str | None]] = (
    contextvars.ContextVar("stackflask_provider_data", default=(None, None))
)


def parse_provider_data(header: str | None) -> dict[str, Any] | None:
    """The header's JSON object, or ``None`` when absent, not a JSON object, or
    nested too deeply to parse."""
    if not header:
        return None
    try:
        data = json.loads(header)
    except ValueError:
        log.warning("ignoring %s: not valid JSON", PROVIDER_DATA_HEADER)
        return None
    except RecursionError:
        log.warning("ignoring %s: nested too deeply", PROVIDER_DATA_HEADER)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", PROVIDER_DATA_HEADER)
        return None
    return data


def request_context(
    header: str | None, validator: str | None, principal: Principal | None = None
) -> contextvars.Context:
    """A context for one request's provider calls: its provider data and principal.

    A copy of the calling thread's context, so nothing set here outlives the
    request on a reused server thread.
    """
    context = contextvars.copy_context()
    context.run(_provider_data.set, (parse_provider_data(header), validator))
    if principal is not None:
        context.run(principal_var.set, principal)
    return context


@contextmanager
def provider_data_context(
    header: str | None, principal: Principal | None = None
) -> Iterator[None]:
    """The provider data of ``header`` and ``principal`` as the current ones, for
    the duration of the block.

    For code that calls providers outside a request (a script, a test, a library
    client); the validator of the provider serving the current request, if any,
    stays in force.
    """
    _, validator = _provider_data.get()
    data_token = _provider_data.set((parse_provider_data(header), validator))
    principal_token = principal_var.set(principal)
    try:
        yield
    finally:
        principal_var.reset(principal_token)
        _provider_data.reset(data_token)


def get_provider_data(validator: str | type | None = None) -> Any:
    """The current request's provider data, or ``None``.

    The data is passed as keyword arguments to ``validator`` (a class or its
    dotted path; by default the serving provider's ``provider_data_validator``),
    and its instance returned; pydantic models validate this way. Data it
    rejects gives ``None``, never an error for the request; the warning logged
    names the fields and error types, never a value. Without any
    validator, the header's JSON object itself is returned.
    """
    data, default = _provider_data.get()
    validator = validator or default
    if data is None or validator is None:
        return data
    try:
        cls = import_object(validator) if isinstance(validator, str) else validator
    except ImportProblem as exc:
        log.warning("ignoring %s: its validator cannot be imported: %s", PROVIDER_DATA_HEADER, exc)
        return None
    try:
        return cls(**data)
    except Exception as exc:  # a bad header must never fail the request
        log.warning(
            "ignoring %s: rejected by %s: %s",
            PROVIDER_DATA_HEADER, validator, describe_rejection(exc),
        )
        return None


class NeedsRequestProviderData:
    """Mixin for providers that read per-request data (Llama Stack's name).

    The resolver sets ``__provider_spec__`` on every implementation it builds; its
    ``provider_data_validator``, when named, validates the data.
    """

    def get_request_provider_data(self) -> Any:
        spec = getattr(self, "__provider_spec__", None)
        return get_provider_data(getattr(spec, "provider_data_validator", None))
