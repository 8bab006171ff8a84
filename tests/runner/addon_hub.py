"""Add-on repositories on the tests' Hub stand-in, fetched by the real fetcher process.

Tiny checkpoints (the model, a tiny VAE, LoRA adapters, safety checkers) are
built locally once per session, published on the Hub stand-in
(tests/fetcher/fetch_standin.py) with the files real repositories carry
besides (a README, pickled weights, a TAESD-style .pth), fetched by
``kubediffusers-fetch`` in a subprocess, then loaded by the runner from the
fetched cache only: the path a pod takes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev import tiny
from kubediffusers.runner.settings import RunnerSettings
from tests.fetcher.fetch_standin import HubStandIn, Repo, rand, run_fetch
from tests.runner.helpers import ThreadedServer

# What real repositories ship besides the loadable files (madebyollin/taesd has all three).
EXTRAS = {
    "README.md": b"# tiny\n",
    "diffusion_pytorch_model.bin": rand(2000, "pickle"),
    "taesd_decoder.pth": rand(2000, "pth"),
}


def snapshot_repo(model_id: str, snapshot: Path, extras: dict[str, bytes] | None = None) -> Repo:
    files = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    return Repo(model_id, {**files, **(extras or {})})


@pytest.fixture(scope="session")
def addon_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Repo]:
    """The repositories, built once: model id -> Repo."""
    root = tmp_path_factory.mktemp("addon-sources")
    built = {
        tiny.tiny_model_id("text-to-image"): tiny.ensure_tiny_model("text-to-image", root),
        tiny.tiny_model_id("text-to-image", "sdxl"): tiny.ensure_tiny_model("text-to-image", root, arch="sdxl"),
        tiny.TINY_VAE_ID: tiny.ensure_tiny_vae(root),
        tiny.tiny_lora_id("sd", 0): tiny.ensure_tiny_lora(root, "sd", 0),
        tiny.tiny_lora_id("sd", 1): tiny.ensure_tiny_lora(root, "sd", 1),
        tiny.tiny_lora_id("sdxl", 0): tiny.ensure_tiny_lora(root, "sdxl", 0),
        tiny.TINY_SAFETY_CHECKER_ID: tiny.ensure_tiny_safety_checker(root),
        tiny.TINY_STRICT_SAFETY_CHECKER_ID: tiny.ensure_tiny_safety_checker(root, flags_everything=True),
    }
    return {
        model_id: snapshot_repo(model_id, snapshot, EXTRAS if model_id != tiny.tiny_model_id("text-to-image") else None) for model_id, snapshot in built.items()
    }


@pytest.fixture
def addon_hub(addon_sources: dict[str, Repo]) -> Iterator[HubStandIn]:
    hub = HubStandIn().start()
    for repo in addon_sources.values():
        hub.add(repo)
    try:
        yield hub
    finally:
        hub.stop()


def fetch_env(tmp_path: Path, hub: HubStandIn) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "KUBEDIFFUSERS_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_ENDPOINT=hub.url,
        KUBEDIFFUSERS_MODEL_DIR=str(tmp_path / "models"),
        KUBEDIFFUSERS_FETCH_TERMINATION_LOG=str(tmp_path / "termination-log"),
        KUBEDIFFUSERS_FETCH_RETRIES="0",
        KUBEDIFFUSERS_FETCH_PROGRESS_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def fetch(tmp_path: Path, hub: HubStandIn, model_id: str, **settings: Any) -> Path:
    """Run the real fetcher for the model and the add-ons in ``settings`` (runner setting names); the model directory."""
    env = fetch_env(tmp_path, hub)
    env["KUBEDIFFUSERS_MODEL_ID"] = model_id
    for name, value in settings.items():
        env["KUBEDIFFUSERS_" + name.upper()] = value if isinstance(value, str) else json.dumps(value)
    result = run_fetch(env, timeout=120)
    assert result.returncode == 0, result.output
    return tmp_path / "models"


@pytest.fixture
def served() -> Iterator[Callable[..., ThreadedServer]]:
    """Start real uvicorn servers on fetched caches; stopped after the test."""
    servers: list[ThreadedServer] = []

    def start(model_dir: Path, model_id: str, **overrides: Any) -> ThreadedServer:
        overrides.setdefault("task", "text-to-image")
        settings = RunnerSettings(model_id=model_id, model_dir=model_dir, device="cpu", **overrides)
        server = ThreadedServer(create_app(settings)).__enter__()
        servers.append(server)
        health = httpx.get(server.url + "/health").json()
        assert health["status"] == "OK", health
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
