"""Body limits over a real socket: huge bodies and slow clients."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

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


# -- the size actually generated (issue 12, points 2 and 3) ---------------------


@pytest.mark.parametrize(
    ("size", "multiple", "height", "width", "fragment"),
    [
        ((1, 4096), 8, None, None, "aspect ratio"),
        ((4, 1000), 8, None, None, "8x1000 is 8000 pixels"),
        ((20, 60), 64, None, None, "aspect ratio"),  # SVD's step: 20x60 would become 64x64
        ((20, 4000), 64, 64, None, "aspect ratio"),
        ((64, 64), 8, 4096, None, "pixels"),
    ],
)
def test_fit_image_checks_the_fitted_size(size: tuple[int, int], multiple: int, height: int | None, width: int | None, fragment: str) -> None:
    from PIL import Image

    from kubediffusers.runner.errors import InvalidInput
    from kubediffusers.runner.inputs import fit_image

    settings = settings_for(Path("/nonexistent"), max_pixels=64 * 64)
    with pytest.raises(InvalidInput, match=fragment):
        fit_image(Image.new("RGB", size), height, width, settings, multiple=multiple)


def test_fit_image_keeps_small_and_step_sized_inputs() -> None:
    from PIL import Image

    from kubediffusers.runner.inputs import fit_image

    settings = settings_for(Path("/nonexistent"), max_pixels=64 * 64)
    assert fit_image(Image.new("RGB", (5, 7)), None, None, settings).size == (8, 8)
    assert fit_image(Image.new("RGB", (66, 60)), None, None, settings, multiple=64).size == (64, 64)
    assert fit_image(Image.new("RGB", (1, 4096)), 64, 64, settings).size == (64, 64)


def test_the_reported_bypass_is_closed() -> None:
    """With the limit at 512x512 a 1 kB 1x262144 PNG held the worker for over 600 s as 8x262144."""
    from PIL import Image

    from kubediffusers.runner.errors import InvalidInput
    from kubediffusers.runner.inputs import fit_image

    settings = settings_for(Path("/nonexistent"), max_pixels=512 * 512)
    with pytest.raises(InvalidInput, match="stretched to 8x262144"):
        fit_image(Image.new("RGB", (1, 262144)), None, None, settings)
