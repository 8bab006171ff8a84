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
    # Constant-time comparison: response timing must not reveal the token.
    if not secrets.compare_digest(supplied.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
