"""Hostile connections against a real runner process (issue 12, points 1 and 5):
request heads are bounded in size (431) and time (408) with the httptools
protocol uvicorn picks, clients that stop reading are disconnected, and a flood
of idle sockets neither exhausts the server nor locks the probes out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.procs import RunnerProcess
from tests.reliability.sockets import connect, flood, read_answer
from tests.runner.helpers import wait_until

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
MAX_CONNECTIONS = 40
HEAD_TIMEOUT = 2.0
WRITE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def guarded(reliability_models: Path) -> Iterator[RunnerProcess]:
    env = {
        "KUBEDIFFUSERS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "KUBEDIFFUSERS_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "KUBEDIFFUSERS_WRITE_TIMEOUT_SECONDS": str(WRITE_TIMEOUT),
        "KUBEDIFFUSERS_LOG_LEVEL": "info",
    }
    with RunnerProcess(reliability_models, "text-to-image", env=env) as runner:
        yield runner


@pytest.mark.parametrize(
    ("name", "head", "line"),
    [
        ("header lines", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Pad: " + b"a" * 1000 + b"\r\n"),
        ("endless header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"a" * 4096),
        ("endless URL", b"GET /healthz?", b"a" * 4096),
    ],
)
def test_an_endless_head_is_431_and_costs_no_memory(guarded: RunnerProcess, name: str, head: bytes, line: bytes) -> None:
    before = guarded.sample().rss
    with connect(guarded) as sock:
        sent = flood(sock, head, line, 64 * MiB)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), (name, answer[:200])
    assert b'"msg"' in answer and b"65536 bytes" in answer
    assert sent < 16 * MiB, f"{name}: the server took {sent} bytes of head"
    assert guarded.sample().rss - before < 32 * MiB
    assert httpx.get(guarded.url + "/healthz").status_code == 200


def test_a_head_at_the_limit_is_served(guarded: RunnerProcess) -> None:
    headers = {f"x-pad-{i}": "a" * 900 for i in range(60)}  # 55 kB of headers
    assert httpx.get(guarded.url + "/healthz", headers=headers).status_code == 200


@pytest.mark.parametrize("head", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"G"])
def test_a_head_that_never_ends_gets_408_at_the_deadline(guarded: RunnerProcess, head: bytes) -> None:
    with connect(guarded) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answer = read_answer(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEAD_TIMEOUT - 0.5 < took < HEAD_TIMEOUT + 10, took


def test_a_slow_head_one_byte_at_a_time_is_cut_at_the_deadline(guarded: RunnerProcess) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(guarded) as sock:
        started = time.monotonic()
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > HEAD_TIMEOUT + 10:
                    break
        except OSError:
            pass
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_keep_alive_requests_are_served_past_the_head_deadline(guarded: RunnerProcess) -> None:
    # The deadline is per head: a connection reused within keep-alive is not cut.
    with httpx.Client(base_url=guarded.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEAD_TIMEOUT * 0.6)


def test_a_client_that_stops_reading_is_disconnected(guarded: RunnerProcess) -> None:
    """Pipelined requests for the OpenAPI document, never read: the answers pile up
    in the server until its write buffer is full, then the write timeout cuts it."""
    before = guarded.sample().rss
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(guarded, rcvbuf=4096) as sock:
        sock.settimeout(1)
        try:
            for _ in range(2000):
                sock.sendall(request)
        except (TimeoutError, OSError):
            pass  # the server stopped reading: its answers are not being taken
        wait_until(lambda: "disconnected a client" in guarded.output(), timeout=WRITE_TIMEOUT + 30, what="the write timeout")
    assert guarded.sample().rss - before < 64 * MiB
    assert httpx.get(guarded.url + "/healthz").status_code == 200


def test_idle_sockets_past_the_limit_do_not_lock_out_probes_or_clients(guarded: RunnerProcess) -> None:
    before = guarded.sample().fds
    idle = [connect(guarded) for _ in range(MAX_CONNECTIONS * 3)]
    try:
        time.sleep(0.3)  # accepted by the server, well within the head deadline
        # The server closed the oldest idle sockets to make room: it holds no more than its limit.
        assert guarded.sample().fds - before <= MAX_CONNECTIONS + 2
        for _ in range(5):
            assert httpx.get(guarded.url + "/healthz", timeout=5).status_code == 200
            assert httpx.get(guarded.url + "/readyz", timeout=5).status_code == 200
        assert guarded.good_request().status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_busy_connections_past_the_limit_leave_room_for_probes(guarded: RunnerProcess) -> None:
    # Connections with a request in progress (a body still arriving) cannot be closed to make room;
    # past the limit only the probe paths are answered.
    head = b"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    busy = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in busy:
            sock.sendall(head)
        time.sleep(0.5)
        assert httpx.get(guarded.url + "/healthz", timeout=5).status_code == 200
        refused = httpx.post(guarded.url + "/text-to-image", json={"prompt": "x"}, timeout=5)
        assert refused.status_code == 503 and refused.headers["retry-after"] and "too many connections" in refused.json()["detail"]["msg"]
    finally:
        for sock in busy:
            sock.close()
    wait_until(lambda: guarded.good_request().status_code == 200, timeout=30, what="serving again")
