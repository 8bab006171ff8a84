"""Body limits over a real socket: huge bodies and slow clients."""

from __future__ import annotations

import json
import socket
import time

import pytest

from kubediffusers.runner.app import create_app
from tests.runner.helpers import ThreadedServer, settings_for


@pytest.fixture(scope="module")
def server(model_dir):  # type: ignore[no-untyped-def]
    app = create_app(settings_for(model_dir, max_upload_bytes=10_000, body_timeout_seconds=0.5))
    with ThreadedServer(app) as running:
        yield running


def exchange(port: int, head: bytes, chunks: list[bytes], pause: float = 0.0) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            time.sleep(pause)
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed early: that is the point
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def test_declared_oversize_body_is_413_without_reading_it(server: ThreadedServer) -> None:
    head = b"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000000\r\n\r\n"
    started = time.monotonic()
    status, body = exchange(server.port, head, [])
    assert status == 413 and "larger than" in body["detail"]["msg"]
    assert time.monotonic() - started < 5


def test_chunked_oversize_body_is_413(server: ThreadedServer) -> None:
    head = b"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"
    status, _body = exchange(server.port, head, [chunk] * 5)
    assert status == 413


def test_slow_body_is_408(server: ThreadedServer) -> None:
    payload = json.dumps({"prompt": "a cat", "num_inference_steps": 1}).encode()
    head = b"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + f"Content-Length: {len(payload)}\r\n\r\n".encode()
    # A slowloris client: a byte every 0.2 s, so the whole body would take seconds.
    status, body = exchange(server.port, head, [payload[i : i + 1] for i in range(len(payload))], pause=0.2)
    assert status == 408 and "did not arrive" in body["detail"]["msg"]


def test_server_still_serves_after_hostile_clients(server: ThreadedServer) -> None:
    import httpx

    r = httpx.post(server.url + "/text-to-image", json={"prompt": "a cat", "num_inference_steps": 1}, timeout=60)
    assert r.status_code == 200
