"""Runner fixtures: tiny checkpoints built once per session, apps on them,
and a real uvicorn server in a thread for tests that need real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.tasks import TASKS
from kubediffusers.runner.tiny import ensure_tiny_model, tiny_model_id

STEPS = 2  # enough to exercise the scheduler, cheap on a CPU


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for task in TASKS:  # every task's tiny model, as the registry lists them
        ensure_tiny_model(task, root)
    ensure_tiny_model("text-to-image", root, arch="sdxl")  # kubediffusers/tiny-sdxl
    return root


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


@pytest.fixture
def make_client(model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start an app on the tiny model with settings overrides; wait until loaded."""
    stack: list[Iterator[TestClient]] = []

    def make(task: str = "text-to-image", **overrides: Any) -> TestClient:
        gen = ready_client(create_app(settings_for(model_dir, task, **overrides)))
        stack.append(gen)
        return next(gen)

    yield make
    for gen in stack:
        gen.close()


@pytest.fixture(scope="module")
def t2i(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("t2i-models")
    ensure_tiny_model("text-to-image", root)
    yield from ready_client(create_app(settings_for(root)))


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
