"""The `kubediffusers-runner` command as a real process on a real socket."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
from PIL import Image

from kubediffusers.runner.dev.tiny import tiny_model_id
from tests.runner.helpers import free_port, wait_until

RUNNER = Path(sys.executable).parent / "kubediffusers-runner"


def start(model_dir: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDIFFUSERS_")}
    full_env.update(
        KUBEDIFFUSERS_TASK="text-to-image",
        KUBEDIFFUSERS_MODEL_ID=tiny_model_id("text-to-image"),
        KUBEDIFFUSERS_MODEL_DIR=str(model_dir),
        KUBEDIFFUSERS_DEVICE="cpu",
        KUBEDIFFUSERS_HOST="127.0.0.1",
        KUBEDIFFUSERS_PORT=str(port),
        **env,
    )
    proc = subprocess.Popen([str(RUNNER)], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=120, what="runner process")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_runner_process_serves_images(model_dir: Path) -> None:
    proc, url = start(model_dir, KUBEDIFFUSERS_AUTH_TOKEN="process-token-123")
    try:
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, timeout=120, what="ready")
        r = httpx.post(
            url + "/text-to-image",
            json={"prompt": "a cat", "num_inference_steps": 2, "seed": 1},
            headers={"Authorization": "Bearer process-token-123"},
            timeout=60,
        )
        assert r.status_code == 200
        data = r.json()["images"][0]["url"].split(",", 1)[1]
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)
        assert httpx.post(url + "/text-to-image", json={"prompt": "x"}).status_code == 401
        assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "kubediffusers runner"
    finally:
        out = stop(proc)
    assert "process-token-123" not in out
    assert "ready in" in out


def test_runner_process_without_model_is_alive_but_not_ready(tmp_path: Path) -> None:
    proc, url = start(tmp_path)
    try:
        wait_until(lambda: httpx.get(url + "/health").json()["status"] == "ERROR", timeout=60, what="error state")
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503 and "kubediffusers-fetch" in r.json()["detail"]["msg"]
    finally:
        stop(proc)
