"""Runner fixtures: tiny checkpoints built once per session and apps on them
(helpers.py holds what the tests share)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import ensure_tiny_model
from kubediffusers.runner.tasks import TASKS
from tests.runner.addon_hub import addon_hub, addon_sources, served  # noqa: F401  (fixtures)
from tests.runner.helpers import ready_client, settings_for


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for task in TASKS:  # every task's tiny model, as the registry lists them
        ensure_tiny_model(task, root)
    ensure_tiny_model("text-to-image", root, arch="sdxl")  # kubediffusers/tiny-sdxl
    return root


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
