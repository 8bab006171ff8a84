"""Every status path under the livepeer compatibility setting: queue full, not
ready, GPU out of memory and timeout answer a status livepeer's spec declares
for the route (500 with the same message and Retry-After), against real
servers; natively they keep 503 / 504 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from kubediffusers.runner.app import create_app
from tests.runner.compat_schemas import check_livepeer
from tests.runner.helpers import ThreadedServer, gated, settings_for, wait_until

BODY = {"prompt": "a red cube", "height": 64, "width": 64, "num_inference_steps": 2, "model_id": "", "loras": "", "safety_check": True}
NATIVE = {"queue full": 503, "not ready": 503, "out of memory": 503, "timeout": 504}


@pytest.fixture(scope="module", params=["none", "livepeer"])
def server(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[ThreadedServer]:
    settings = settings_for(model_dir, compatibility=request.param, max_queue_size=1)
    with ThreadedServer(create_app(settings)) as running:
        yield running


@pytest.fixture(autouse=True)
def idle(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with an empty queue (an earlier test's timed-out job may still be on it)."""
    if "server" in request.fixturenames:
        worker = request.getfixturevalue("server").app.state.context.worker
        wait_until(lambda: worker.depth == 0 and not worker.busy, what="an idle worker")
    yield


def expect(server: ThreadedServer, r: httpx.Response, path: str, fragment: str, *, retry_after: bool = True) -> None:
    mode = server.app.state.context.settings.compatibility.value
    assert fragment in r.json()["detail"]["msg"], r.text
    if retry_after:
        assert int(r.headers["retry-after"]) >= 1
    if mode == "livepeer":
        assert r.status_code == 500, r.text
        check_livepeer("/text-to-image", r)
    else:
        assert r.status_code == NATIVE[path], r.text


def post(server: ThreadedServer, timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url + "/text-to-image", json=BODY, timeout=timeout)


def test_queue_full(server: ThreadedServer) -> None:
    with gated(server.app) as gate, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, server)
        gate.wait_entered()
        waiting = pool.submit(post, server)
        wait_until(lambda: server.app.state.context.worker.depth == 1, what="a queued request")
        r = post(server)
        expect(server, r, "queue full", "queue is full")
        gate.release.set()
        assert running.result().status_code in (200, 500, 504)
        waiting.result()


def test_timeout(server: ThreadedServer) -> None:
    context = server.app.state.context
    settings = context.settings
    context.settings = settings.model_copy(update={"request_timeout_seconds": 1.0})
    try:
        with gated(server.app) as gate:
            r = post(server)
            gate.release.set()
    finally:
        context.settings = settings
    # The worker answers 504 natively; no Retry-After: retrying the same request takes as long.
    expect(server, r, "timeout", "did not finish within", retry_after=False)


class OutOfMemoryPipe:
    """The loaded diffusers pipeline, but its call raises CUDA's out-of-memory error."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __call__(self, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory(server: ThreadedServer) -> None:
    pipeline = server.app.state.context.model.pipeline
    real = pipeline.pipe
    pipeline.pipe = OutOfMemoryPipe(real)
    try:
        r = post(server)
    finally:
        pipeline.pipe = real
    expect(server, r, "out of memory", "ran out of memory")
    assert post(server).status_code == 200  # memory was freed; the next request runs


@pytest.mark.parametrize("mode", ["none", "livepeer"])
def test_not_ready(tmp_path: Path, mode: str) -> None:
    settings = settings_for(tmp_path, compatibility=mode, model_id="nobody/missing")
    with ThreadedServer(create_app(settings)) as running:
        r = post(running)
        expect(running, r, "not ready", "not ready")
        # Health stays livepeer's HealthCheck shape, with the reason.
        health = httpx.get(running.url + "/health")
        check_livepeer("/health", health, method="get")
        assert health.json()["status"] == "ERROR"
