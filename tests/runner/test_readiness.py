"""Loading, readiness and refusing unsafe or missing checkpoints."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from tests.runner.helpers import settings_for, wait_until


def error_client(settings) -> TestClient:  # type: ignore[no-untyped-def]
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    wait_until(lambda: client.get("/health").json()["status"] != "LOADING", what="load attempt")
    return client


def assert_not_ready(client: TestClient, fragment: str) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ERROR" and fragment in health["detail"], health
    ready = client.get("/readyz")
    assert ready.status_code == 503 and fragment in ready.json()["detail"]["msg"]
    assert client.get("/healthz").status_code == 200  # alive: kubelet must not restart-loop it
    r = client.post("/text-to-image", json={"prompt": "x"})
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert "not ready" in r.json()["detail"]["msg"]


def test_missing_model_leaves_the_server_up_and_not_ready(tmp_path: Path) -> None:
    client = error_client(settings_for(tmp_path, model_id="nobody/nothing"))
    try:
        assert_not_ready(client, "not in the cache")
    finally:
        client.__exit__(None, None, None)


def test_missing_model_dir(tmp_path: Path) -> None:
    client = error_client(settings_for(tmp_path / "absent"))
    try:
        assert_not_ready(client, "does not exist")
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def private_model(tmp_path: Path) -> Path:
    """A writable copy of the tiny checkpoint to tamper with."""
    snapshot = ensure_tiny_model("text-to-image", tmp_path)
    for path in list(snapshot.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            path.unlink()
            shutil.copy(target, path)
    return snapshot


def test_pickled_weights_are_refused(private_model: Path) -> None:
    unet = private_model / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model.bin")
    client = error_client(settings_for(private_model.parents[2]))
    try:
        assert_not_ready(client, "pickled checkpoint")
    finally:
        client.__exit__(None, None, None)


def test_remote_code_is_refused(private_model: Path) -> None:
    index_file = private_model / "model_index.json"
    index = json.loads(index_file.read_text())
    index["unet"] = ["my_custom_unet", "EvilUNet"]
    index_file.write_text(json.dumps(index))
    (private_model / "my_custom_unet.py").write_text("raise SystemExit('pwned')\n")
    client = error_client(settings_for(private_model.parents[2]))
    try:
        assert_not_ready(client, "remote code is never run")
    finally:
        client.__exit__(None, None, None)


def test_broken_weights_are_reported(private_model: Path) -> None:
    (private_model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    client = error_client(settings_for(private_model.parents[2]))
    try:
        assert_not_ready(client, "cannot load")
    finally:
        client.__exit__(None, None, None)


def test_readiness_goes_from_loading_to_ok_only_after_warm_up(model_dir: Path, monkeypatch) -> None:
    from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline

    release = threading.Event()
    real_warmup = TextToImagePipeline.warmup_work

    def slow_warmup(self):  # type: ignore[no-untyped-def]
        release.wait(30)
        return real_warmup(self)

    monkeypatch.setattr(TextToImagePipeline, "warmup_work", slow_warmup)
    with TestClient(create_app(settings_for(model_dir)), raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/health").json()["detail"] == "warming up", what="warm-up")
        assert client.get("/health").json()["status"] == "LOADING"
        assert client.get("/readyz").status_code == 503
        release.set()
        wait_until(lambda: client.get("/readyz").status_code == 200, what="ready")
        health = client.get("/health").json()
        assert health["status"] == "OK" and health["revision"]
        assert "kubediffusers_model_load_seconds" in client.get("/metrics").text


def test_fetch_marker_decides_the_snapshot(tmp_path: Path) -> None:
    """With a completion marker, the runner loads the commit the fetcher resolved,
    even when refs/main has moved on since (a newer, unfetched commit)."""
    from kubediffusers.runner.fetch.marker import Marker, MarkerFile, write_marker
    from kubediffusers.runner.model import find_snapshot

    snapshot = ensure_tiny_model("text-to-image", tmp_path)
    commit = snapshot.name
    files = tuple(MarkerFile(path=p.relative_to(snapshot).as_posix(), size=p.stat().st_size) for p in snapshot.rglob("*") if p.is_file())
    model_id = tiny_model_id("text-to-image")
    write_marker(
        Marker(
            model_id=model_id, revision="main", variant=None, resolved_commit=commit, files=files, completed_at="2026-01-01T00:00:00+00:00", model_dir=tmp_path
        )
    )
    (snapshot.parents[1] / "refs" / "main").write_text("f" * 40)
    path, revision = find_snapshot(settings_for(tmp_path))
    assert (path, revision) == (snapshot, commit)
