"""Who may call a route: `reader`, `submitter`, `operator` (FastAPI dependencies) check the
credential, meter failed authentications per client address, take a token from the caller's
bucket and check the role (docs/api.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nlp_assets.api.auth import AuthError, Forbidden, Principal, require
from nlp_assets.api.guard import printable
from nlp_assets.api.ratelimit import RateLimiterUnavailable
from nlp_assets.api.services import Services, services

log = logging.getLogger("nlp_assets.api")

bearer = HTTPBearer(auto_error=False, description="An API key (nlp_...) or a JWT.")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def _refused(request: Request, found: Services, error: AuthError) -> HTTPException:
    """401, or 429 once this client address has failed too often (guessing is metered)."""
    found.metrics.rejections.labels("unauthenticated").inc()
    client = request.client.host if request.client else "-"
    try:
        decision = found.failures.take(f"ip:{client}")
    except RateLimiterUnavailable:
        return HTTPException(503, "service unavailable", {"Retry-After": "5"})
    if not decision.allowed:
        found.metrics.rejections.labels("rate limited").inc()
        return HTTPException(
            429,
            f"too many failed authentications from your address: retry after "
            f"{decision.retry_after_s} s",
            {"Retry-After": str(decision.retry_after_s)},
        )
    return HTTPException(401, str(error), {"WWW-Authenticate": "Bearer"})


def caller(role: str) -> Callable[..., Principal]:
    def dependency(
        request: Request,
        found: Services = Depends(services),  # noqa: B008
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        api_key: str | None = Depends(header_key),
    ) -> Principal:
        metrics, config = found.metrics, found.config
        try:
            principal = found.auth.authenticate(request.headers.get("authorization"), api_key)
        except AuthError as error:
            raise _refused(request, found, error) from None
        except Forbidden as error:
            metrics.rejections.labels("forbidden").inc()
            raise HTTPException(403, str(error)) from None
        except ConnectionError as error:  # the key store; its reason is for the server log
            log.warning("credential store unavailable: %s", printable(str(error), 300))
            raise HTTPException(503, "credential store unavailable", {"Retry-After": "5"}) from None
        request.state.principal = principal.subject
        try:
            decision = found.limiter.take(principal.subject)
        except RateLimiterUnavailable as error:
            raise HTTPException(503, str(error), {"Retry-After": "5"}) from None
        if not decision.allowed:
            metrics.rejections.labels("rate limited").inc()
            raise HTTPException(
                429,
                f"rate limit of {config.rate_per_second:g}/s (burst {config.rate_burst}) "
                f"for {principal.subject} exceeded: retry after {decision.retry_after_s} s",
                {"Retry-After": str(decision.retry_after_s)},
            )
        try:
            require(principal, role)
        except Forbidden as error:
            metrics.rejections.labels("forbidden").inc()
            raise HTTPException(403, str(error)) from None
        return principal

    return dependency


reader: Any = Depends(caller("reader"))
submitter: Any = Depends(caller("submitter"))
operator: Any = Depends(caller("operator"))
