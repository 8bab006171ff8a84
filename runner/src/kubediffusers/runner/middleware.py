"""The runner's ASGI middleware: request metrics, and body limits enforced
while the body arrives (a size cap and a deadline, so neither a multi-GB
upload nor a slow trickle ties up the server)."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubediffusers.runner.errors import error_response
from kubediffusers.runner.metrics import Metrics


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
        too_large = f"the request body is larger than the {self.max_bytes} bytes allowed"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
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
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await refuse(408, f"the request body did not arrive within {self.timeout_seconds:g} seconds")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
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
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
