"""The HTTP server around the app: uvicorn with a guarded connection protocol
and a draining shutdown.

uvicorn (0.54) bounds nothing before the app sees a request: with httptools,
which ``uvicorn[standard]`` installs and uvicorn then picks, the request line
and headers grow without limit and without a deadline
(``h11_max_incomplete_event_size`` applies to h11 only), a client that never
reads an answer holds it in memory forever, and idle sockets pile up until
accepting fails. ``GuardedProtocol`` is the httptools protocol with those
bounds; ``DrainingServer`` turns SIGTERM into a drain of the queued work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.drain import drain
from kubediffusers.runner.settings import RunnerSettings

log = logging.getLogger(__name__)

# Request line plus headers. Real clients send a few kB; 64 KiB is what h11 allows by default.
MAX_HEAD_BYTES = 64 * 1024
# Paths answered on the connections admitted past the limit, so probes and scrapes get through a flood.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/health", "/metrics"})
PROBE_RESERVE = 16
# File descriptors kept free of connections: the model files, the log, the executor.
SPARE_FDS = 64
# A client blocking our writes must take at least this much of the answer per write timeout.
MIN_WRITE_PROGRESS = 256 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    head_bytes: int = MAX_HEAD_BYTES
    head_timeout: float = 10.0
    write_timeout: float = 20.0
    max_connections: int = 1000


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered so that connections and the probe reserve never exhaust the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - SPARE_FDS - PROBE_RESERVE))


def raw_error(status: int, reason: str, msg: str) -> bytes:
    """A complete HTTP/1.1 error answer in the runner's error shape, closing the connection."""
    body = json.dumps({"detail": {"msg": msg}}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode("ascii") + body


async def _probes_only(app: Any, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
        await app(scope, receive, send)
        return
    body = json.dumps({"detail": {"msg": "the runner has too many connections open; retry later"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on what a client can hold:

    - the request head (line and headers) is at most ``head_bytes`` (431) and
      must arrive within ``head_timeout`` of its first byte, or of the
      connection's opening (408);
    - a client that stops reading an answer for ``write_timeout`` (taking
      less than ``MIN_WRITE_PROGRESS`` of it) is disconnected;
    - past ``max_connections``, the longest-idle connection is closed to make
      room; when none is idle, up to ``PROBE_RESERVE`` more are admitted for
      the probe paths only, and any beyond are closed at once.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[GuardedProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._head_started = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_buffered = 0

    # -- connections -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        self._head_started = self.loop.time()
        if crowded and not self._evict_idle():
            if len(self.connections) > self.limits.max_connections + PROBE_RESERVE:
                transport.write(raw_error(503, "Service Unavailable", "the runner has too many connections open; retry later"))
                transport.close()
                return
            app = self.app
            self.app = lambda scope, receive, send: _probes_only(app, scope, receive, send)
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _idle(self) -> bool:
        return self._in_head and self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete)

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest (no request in progress), if any."""
        idle = [c for c in self.connections if isinstance(c, GuardedProtocol) and c is not self and c._idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._head_started)
        oldest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None

    # -- the request head ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_bytes == 0 and self._head_timer is None:
                self._head_started = self.loop.time()
                self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._head_tail))
            self._head_tail = seen[-3:]
            if self._head_bytes > self.limits.head_bytes:
                self._refuse(431, "Request Header Fields Too Large", f"the request line and headers are larger than the {self.limits.head_bytes} bytes allowed")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._head_tail = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what follows is the next request's head

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is still being answered; its head deadline starts with its next bytes
        if self._head_bytes == 0 and self.cycle is not None:
            self.transport.close()  # an idle keep-alive connection: nothing to answer
            return
        self._refuse(408, "Request Timeout", f"the request head did not arrive within {self.limits.head_timeout:g} seconds")

    def _refuse(self, status: int, reason: str, msg: str) -> None:
        log.info("refused a request head: %s", msg)
        self._cancel_timers()
        self.transport.write(raw_error(status, reason, msg))
        self.transport.close()
        self._in_head = False

    # -- writing answers -------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_buffered = self.transport.get_write_buffer_size()
        self._write_timer = self.loop.call_later(self.limits.write_timeout, self._write_check)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_check(self) -> None:
        buffered = self.transport.get_write_buffer_size()
        if self._write_buffered - buffered < MIN_WRITE_PROGRESS:
            log.info("disconnected a client that took %d bytes of its answer in %gs", max(0, self._write_buffered - buffered), self.limits.write_timeout)
            self._write_timer = None
            self.transport.abort()
            return
        self._write_buffered = buffered
        self._write_timer = self.loop.call_later(self.limits.write_timeout, self._write_check)


class DrainingServer(uvicorn.Server):
    """SIGTERM (or SIGINT) starts a drain instead of an exit: the runner turns
    unready and refuses new work at once, finishes what is running and queued
    within the drain deadline, fails what is left with a clear error, then
    lets uvicorn close the connections and exit. A second signal exits now."""

    def __init__(self, config: uvicorn.Config, context: RunnerContext) -> None:
        super().__init__(config)
        self.context = context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None:
            # A second signal, or one before serving started: uvicorn's own shutdown, now.
            log.warning("%s: exiting without waiting for the drain", signal.Signals(sig).name)
            self.should_exit = True
            return
        # Signal handlers run on the loop's thread between callbacks: scheduling from here is safe.
        self._drain = self._loop.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await drain(self.context, self.context.settings.resolved_drain_seconds())
        finally:
            self.should_exit = True


def serve(settings: RunnerSettings) -> None:
    from kubediffusers.runner.app import create_app

    app = create_app(settings)
    limits = ConnectionLimits(
        head_timeout=settings.head_timeout_seconds,
        write_timeout=settings.write_timeout_seconds,
        max_connections=connection_limit(settings.max_connections),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=GuardedProtocol.with_limits(limits),
        timeout_keep_alive=5,
        # After the drain only answers being written remain; a slow reader is cut at the write timeout anyway.
        timeout_graceful_shutdown=int(settings.write_timeout_seconds) + 5,
    )
    DrainingServer(config, app.state.context).run()
