"""OAuth2 JWTs checked against a JWKS (``oauth2_token`` with ``jwks``), through PyJWT.

Request time; imported only when configured (the ``stackflask[jwt]`` extra).
The key set is fetched on first use and cached: fetched again when older than
``key_recheck_period``, and when a token names a key id the set lacks (at most
once per :data:`UNKNOWN_KID_REFETCH` seconds, so forged key ids cannot make the
server hammer the JWKS). A failed fetch is answered ``503`` and not retried for
:data:`FAILED_FETCH_BACKOFF` seconds, so a down JWKS does not queue every request
behind its timeout. Only asymmetric algorithms that fit the key are accepted:
``alg: none`` and an HMAC signed with a public key are refused before any check.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt
from flask import Request

from .auth import Principal, TokenRejected, VerifierUnavailable
from .token_http import call, shown
from .tokens import principal_from_claims

#: The algorithms each key type may verify (an EC key: that of its curve).
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
ASYMMETRIC = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {"EdDSA"}

UNKNOWN_KID_REFETCH = 10.0
FAILED_FETCH_BACKOFF = 2.0


def algorithms_of(jwk: Mapping[str, Any]) -> frozenset[str]:
    """What a JWK may verify: its ``alg`` if it names one, else its type's algorithms."""
    kty = jwk.get("kty")
    if kty == "RSA":
        fits = RSA_ALGORITHMS
    elif kty == "EC":
        fits = frozenset({EC_ALGORITHMS[jwk["crv"]]}) if jwk.get("crv") in EC_ALGORITHMS else frozenset()
    elif kty == "OKP" and jwk.get("crv") == "Ed25519":
        fits = frozenset({"EdDSA"})
    else:
        fits = frozenset()
    alg = jwk.get("alg")
    return fits & {alg} if alg is not None else fits


class JwksVerifier:
    """Verifies JWT signatures, ``exp``, ``aud`` and ``iss`` (when set) and maps claims."""

    def __init__(self, config: Mapping[str, Any], context: ssl.SSLContext, timeout: float) -> None:
        jwks = config["jwks"]
        self.uri: str = jwks["uri"]
        self.headers = {"Authorization": f"Bearer {jwks['token']}"} if jwks["token"] else {}
        self.recheck = float(jwks["key_recheck_period"])
        self.audience: str = config["audience"]
        self.issuer: str | None = config["issuer"]
        self.claims_mapping: dict[str, str] = dict(config["claims_mapping"])
        self.context = context
        self.timeout = timeout
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._built: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed: tuple[float, str] | None = None

    def verify(self, token: str, request: Request) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRejected("Invalid token: not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ASYMMETRIC:
            raise TokenRejected(
                f"Invalid token: algorithm {alg!r} is not accepted (only the JWKS keys' "
                "asymmetric algorithms are)"
            )
        if not isinstance(kid, str):
            raise TokenRejected("Invalid token: its header names no key id ('kid')")
        key = self._key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("Invalid token: expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"Invalid token: its audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(f"Invalid token: its issuer is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"Invalid token: it has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("Invalid token: signature verification failed") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("Invalid token: not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"Invalid token: {type(exc).__name__}") from None
        if not isinstance(claims["sub"], str):
            raise TokenRejected("Invalid token: its 'sub' claim is not a string")
        return principal_from_claims(claims["sub"], claims, self.claims_mapping)

    def _key(self, kid: str, alg: str) -> jwt.PyJWK:
        jwk = self._current_keys(kid).get(kid)
        if jwk is None:
            raise TokenRejected("Invalid token: its key id is not in the JWKS")
        if alg not in algorithms_of(jwk):
            raise TokenRejected(f"Invalid token: algorithm {alg!r} does not fit its key")
        with self._lock:
            built = self._built.get((kid, alg))
        if built is None:
            try:
                built = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWKError as exc:
                raise VerifierUnavailable(
                    f"the JWKS at {shown(self.uri)}: key {kid!r} cannot be used: {exc}"
                ) from None
            with self._lock:
                self._built[(kid, alg)] = built
        return built

    def _current_keys(self, kid: str) -> dict[str, dict[str, Any]]:
        """The key set, fetched first when stale, or when ``kid`` is new to it."""
        with self._lock:
            now = time.monotonic()
            if self._failed is not None and now - self._failed[0] < FAILED_FETCH_BACKOFF:
                raise VerifierUnavailable(self._failed[1])
            at = self._fetched_at
            if at is None or now - at >= self.recheck or (
                kid not in self._keys and now - at >= UNKNOWN_KID_REFETCH
            ):
                try:
                    self._keys = self._fetch()
                except VerifierUnavailable as exc:
                    self._failed = (time.monotonic(), exc.reason)
                    raise
                self._built.clear()
                self._fetched_at, self._failed = time.monotonic(), None
            return self._keys

    def _fetch(self) -> dict[str, dict[str, Any]]:
        answer = call("the JWKS", self.uri, timeout=self.timeout, headers=self.headers, context=self.context)
        where = f"the JWKS at {shown(self.uri)}"
        if answer.status != 200:
            raise VerifierUnavailable(f"{where} answered {answer.status}")
        keys = answer.body.get("keys") if isinstance(answer.body, dict) else None
        if not isinstance(keys, list):
            raise VerifierUnavailable(f"{where} answered no 'keys' list")
        return {
            key["kid"]: key
            for key in keys
            if isinstance(key, dict)
            and isinstance(key.get("kid"), str)
            and key.get("use", "sig") == "sig"
            and algorithms_of(key)
        }
