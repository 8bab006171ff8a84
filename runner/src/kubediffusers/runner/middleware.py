"""The runner's ASGI middleware: request metrics, the token checked before any
body is read, and body limits enforced while the body arrives (a size cap and
a deadline, so neither a multi-GB upload nor a slow trickle ties up the
server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubediffusers.runner.auth import UNAUTHORIZED, bearer_of, token_matches
from kubediffusers.runner.errors import Unauthorized, error_response, styled_response
from kubediffusers.runner.metrics import Metrics

# JSON request bodies are a prompt and a few numbers: parsing and validating a
# larger one (a million unknown keys) only blocks the event loop.
MAX_JSON_BYTES = 1024 * 1024
# Methods the metrics label by name; any other is counted as "other", so odd methods cannot grow the series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TokenFirst:
    """With auth on (the app adds it only then), a request to a guarded route without the token gets 401
    before its body is read: tokenless clients cannot spool uploads to the
    temp directory. (The routes' own ``require_token`` still documents and
    re-checks it.)"""

    def __init__(self, app: ASGIApp, token: str, guarded: Sequence[BaseRoute]) -> None:
        self.app = app
        self.token = token
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = next((r for r in self.guarded if r.matches(scope)[0] is Match.FULL), None) if scope["type"] == "http" else None
        if route is not None:
            supplied = next((bearer_of(v) for n, v in scope.get("headers", []) if n == b"authorization"), "")
            if not token_matches(supplied, self.token):
                # Answered before routing: the route's API (native, livepeer, PICO) still picks the shape.
                response = styled_response(Request({**scope, "route": route}), 401, UNAUTHORIZED)
                response.headers.update(Unauthorized.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_json(scope: Scope) -> bool:
    content_type = next((v for n, v in scope.get("headers", []) if n == b"content-type"), b"")
    return content_type.split(b";")[0].strip().lower().endswith(b"json")


class BodyLimits:
    """413 from Content-Length at once, or as soon as a chunked body passes
    the cap; 408 when the whole body has not arrived within the deadline."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = min(self.max_bytes, MAX_JSON_BYTES) if is_json(scope) else self.max_bytes
        too_large = f"the request body is larger than the {max_bytes} bytes allowed" + (" for JSON" if max_bytes < self.max_bytes else "")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await error_response(413, too_large)(scope, receive, send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_seconds
        received = 0
        body_done = False
        started = False
        refused = False

        async def refuse(status: int, msg: str) -> Message:
            # Answer here, then tell the app the client left: frameworks turn
            # exceptions raised while reading a body into their own 400s.
            nonlocal refused
            if not started:
                await error_response(status, msg)(scope, receive, send)
            refused = True
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done or refused:  # later calls only wait for a disconnect: no deadline
                return await receive()
            try:
                # A deadline on this task, not wait_for's task per receive: one loop iteration less per request.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await refuse(408, f"the request body did not arrive within {self.timeout_seconds:g} seconds")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    return await refuse(413, too_large)
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the answer was already sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


class RequestMetrics:
    """Counts requests by route template and status. A plain ASGI middleware:
    it leaves ``receive`` alone, so handlers still see client disconnects."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # Label by route template, never the raw path: unknown paths must not grow the series.
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(path, method, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
