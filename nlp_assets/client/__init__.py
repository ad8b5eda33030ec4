"""The API's Python SDK (`Client`) and the `nlp` command line (docs/api.md)."""

from nlp_assets.client.sdk import (
    ApiError,
    AuthenticationError,
    Client,
    DocumentStatus,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Prediction,
    RateLimited,
    RequestRejected,
    RunStatus,
    SubmitResult,
    Unavailable,
)

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "DocumentStatus",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Prediction",
    "RateLimited",
    "RequestRejected",
    "RunStatus",
    "SubmitResult",
    "Unavailable",
]
