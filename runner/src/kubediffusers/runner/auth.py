"""Optional bearer-token auth for the inference routes."""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kubediffusers.runner.context import get_context
from kubediffusers.runner.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="Needed when the runner has an auth token configured.")


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    expected = get_context(request).settings.auth_token
    if expected is None:
        return
    supplied = credentials.credentials if credentials is not None else ""
    if not token_matches(supplied, expected.get_secret_value()):
        raise Unauthorized(UNAUTHORIZED)


UNAUTHORIZED = "a valid 'Authorization: Bearer <token>' header is required"


def token_matches(supplied: str, expected: str) -> bool:
    # Constant-time comparison: response timing must not reveal the token.
    return secrets.compare_digest(supplied.encode(), expected.encode())


def bearer_of(authorization: bytes) -> str:
    """The credentials of an 'Authorization: Bearer <token>' header value ('' if it is not one)."""
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
