"""Who is calling: an API key or a JWT bearer from the organisation's OIDC provider.

Both arrive as ``Authorization: Bearer <token>`` (an API key may also come as ``X-API-Key``).
Tokens shaped like our keys (``nlp_...``) are looked up in the key store; anything else is
verified as a JWT (signature by JWKS URL or PEM public key, ``exp``, ``iss``, ``aud``).

Roles are ranked: reader < submitter < operator; an endpoint names the least role it needs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt

from nlp_assets.api.config import ROLES, ApiSettings
from nlp_assets.api.keys import CHANNEL, TOKEN_PREFIX, KeyStore

log = logging.getLogger("nlp_assets.api.auth")

RANK = {role: rank for rank, role in enumerate(ROLES)}


class AuthError(Exception):
    """401: no credential, or one that is not valid. The message is for anyone who sends a
    request: it names the kind of failure, never a setting or a library's words."""


class Forbidden(Exception):
    """403: a valid credential whose role does not reach the endpoint."""


@dataclass(frozen=True)
class Principal:
    subject: str  # "key:<key id>" or "jwt:<sub>": the rate-limit bucket and the log name
    role: str
    kind: str  # "key" or "jwt"
    #: The channels (sources) this credential may submit to; empty: the default channel only.
    channels: tuple[str, ...] = ()


def require(principal: Principal, role: str) -> None:
    if RANK[principal.role] < RANK[role]:
        raise Forbidden(
            f"this endpoint needs role '{role}' or above; your credential has '{principal.role}'"
        )


class Authenticator:
    def __init__(self, config: ApiSettings, keys: KeyStore):
        self.config = config
        self.keys = keys
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        config.check()
        ttl = config.jwt_jwks_cache_seconds
        self._jwks = (
            jwt.PyJWKClient(
                config.jwt_jwks_url, cache_jwk_set=ttl > 0, lifespan=ttl if ttl > 0 else 300
            )
            if config.jwt_jwks_url
            else None
        )

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        token = api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("Authorization must be 'Bearer <API key or JWT>'")
            token = value.strip()
        if not token:
            raise AuthError(
                "no credential: send 'Authorization: Bearer <API key or JWT>' "
                "(create a key with `nlp keys create`)"
            )
        if token.startswith(TOKEN_PREFIX):
            return self._api_key(token)
        return self._jwt(token)

    def _api_key(self, token: str) -> Principal:
        now = time.monotonic()
        ttl = self.config.key_cache_seconds
        if ttl > 0:
            with self._lock:
                hit = self._cache.get(token)
            if hit is not None and now - hit[0] < ttl:
                principal = hit[1]
                if principal is None:
                    raise AuthError("invalid, revoked or expired API key")
                return principal
        key = self.keys.verify(token)
        principal = (
            Principal(f"key:{key.key_id}", key.role, "key", key.channels)
            if key and key.active
            else None
        )
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token] = (now, principal)
        if principal is None:
            raise AuthError("invalid, revoked or expired API key")
        return principal

    def _jwt(self, token: str) -> Principal:
        config = self.config
        if not config.jwt_configured:
            raise AuthError("invalid credential: not a valid API key or JWT")
        try:
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                key = config.jwt_public_key
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(config.jwt_algorithms),
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
                options={"require": ["exp", "sub"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("JWT expired: get a new token from your identity provider") from None
        except jwt.InvalidAudienceError:
            raise AuthError("JWT not accepted: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("JWT not accepted: wrong issuer") from None
        except jwt.PyJWKClientError:  # the JWKS cannot be fetched, or has no such `kid`
            raise AuthError("JWT not accepted: unknown signing key") from None
        except Exception as error:  # PyJWTError, and whatever odd input raises inside it
            log.info("JWT refused: %s", type(error).__name__)
            raise AuthError("invalid JWT") from None
        known = [role for role in _names(claims.get(config.jwt_roles_claim)) if role in RANK]
        if not known:
            raise Forbidden(
                f"JWT has no role in claim {config.jwt_roles_claim!r} (one of {', '.join(ROLES)})"
            )
        role = max(known, key=RANK.__getitem__)
        channels = tuple(
            c for c in _names(claims.get(config.jwt_channels_claim)) if CHANNEL.fullmatch(c)
        )
        return Principal(f"jwt:{claims['sub']}", role, "jwt", channels)


def _names(claim: Any) -> list[str]:
    """A claim holding names: a list of strings or one space-separated string (anything else,
    and any non-string in a list, is ignored: odd claim types are never a 500)."""
    if isinstance(claim, str):
        return claim.split()
    if isinstance(claim, list):
        return [name for name in claim if isinstance(name, str)]
    return []
