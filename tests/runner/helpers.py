"""What the runner tests share: settings on the tiny models, waiting, a real
uvicorn server in a thread, test inputs and decoders, error and metric
assertions, and a gate that holds a generation until the test releases it.
Fixtures stay in conftest.py; test modules import helpers from here only."""

from __future__ import annotations

import base64
import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from kubediffusers.runner.dev.tiny import tiny_model_id
from kubediffusers.runner.settings import RunnerSettings

STEPS = 2  # enough to exercise the scheduler, cheap on a CPU


def settings_for(model_dir: Path, task: str = "text-to-image", **overrides: Any) -> RunnerSettings:
    values: dict[str, Any] = dict(task=task, model_id=tiny_model_id(task), model_dir=model_dir, device="cpu")
    values.update(overrides)
    return RunnerSettings(**values)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ready_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/health").json()["status"] != "LOADING", what="model load")
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 running an app object in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn start")
        wait_until(lambda: httpx.get(self.url + "/health").json()["status"] != "LOADING", what="model load")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def png(size: tuple[int, int], color: int | tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def half_mask(size: tuple[int, int]) -> bytes:
    """An inpainting mask: white (repaint) on the right half, black (keep) on the left."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def mp4_frames(data: bytes) -> tuple[list[Image.Image], float]:
    """The decoded frames of an mp4 file and its frame rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [f.to_image() for f in container.decode(stream)], float(stream.average_rate)


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    raise AssertionError(f"{name}{{{want}}} not in metrics")


def error_text(body: dict) -> str:
    """An error answer's message: detail.msg, or a 422's items as "loc: msg; ..."."""
    detail = body["detail"]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in detail)
    return str(detail["msg"])


def assert_validation_shape(body: dict) -> None:
    """FastAPI's 422 (livepeer's HTTPValidationError): {"detail": [{"loc", "msg", "type"}]}, bounded."""
    assert set(body) == {"detail"} and isinstance(body["detail"], list) and 1 <= len(body["detail"]) <= 20, body
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list) and all(isinstance(p, str | int) for p in item["loc"]), item
        assert isinstance(item["msg"], str) and isinstance(item["type"], str), item


def assert_error(r, status: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    if status == 422:
        assert_validation_shape(body)
    else:
        assert set(body) == {"detail"} and isinstance(body["detail"]["msg"], str)
    assert fragment in error_text(body), body
    assert "Traceback" not in r.text


def decode(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


class Gate:
    """Wraps the loaded pipeline's run so a test decides when generation ends."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.real_run = pipeline.run
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def run(self, work: Any, on_step: Any = None) -> Any:
        self.calls += 1
        self.entered.release()
        while not self.release.wait(0.01):
            if on_step is not None:
                on_step(0, 1)  # lets cancellation through, like a real denoising step
        return self.real_run(work, on_step)

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=30), "generation never started"


@contextmanager
def gated(app_or_client: Any) -> Iterator[Gate]:
    app = getattr(app_or_client, "app", app_or_client)
    pipeline = app.state.context.model.pipeline
    gate = Gate(pipeline)
    pipeline.run = gate.run
    try:
        yield gate
    finally:
        gate.release.set()
        pipeline.run = gate.real_run
