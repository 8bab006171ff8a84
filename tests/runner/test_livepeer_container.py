"""The runner image as one of go-livepeer's managed containers: its container
manager (ai/worker/docker.go) sets PIPELINE and MODEL_ID and expects port 8000;
and the limits livepeer's own example data would hit under compatibility livepeer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from kubediffusers.runner.dev.tiny import tiny_model_id
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.inputs import check_upscaled_size
from kubediffusers.runner.settings import RunnerSettings, load_settings
from tests.runner.compat_schemas import check_livepeer
from tests.runner.helpers import free_port, wait_until

RUNNER = Path(sys.executable).parent / "kubediffusers-runner"


def test_a_process_started_as_go_livepeer_starts_it_serves(model_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDIFFUSERS_") and k not in ("PIPELINE", "MODEL_ID")}
    # What docker.go sets (PIPELINE, MODEL_ID), plus where this test keeps the model and a free port.
    env.update(
        PIPELINE="text-to-image",
        MODEL_ID=tiny_model_id("text-to-image"),
        KUBEDIFFUSERS_MODEL_DIR=str(model_dir),
        KUBEDIFFUSERS_DEVICE="cpu",
        KUBEDIFFUSERS_HOST="127.0.0.1",
        KUBEDIFFUSERS_PORT=str(port),
        KUBEDIFFUSERS_COMPATIBILITY="livepeer",
    )
    proc = subprocess.Popen([str(RUNNER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(url + "/health", timeout=1).json()["status"] == "OK"
            except (httpx.TransportError, ValueError):
                return False

        wait_until(ready, timeout=180, what="runner process")
        version = httpx.get(url + "/version")
        check_livepeer("/version", version, method="get")
        assert version.json()["pipeline"] == "text-to-image" and version.json()["model_id"] == tiny_model_id("text-to-image")
        r = httpx.post(
            url + "/text-to-image",
            json={"model_id": tiny_model_id("text-to-image"), "prompt": "x", "height": 64, "width": 64, "num_inference_steps": 2},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        check_livepeer("/text-to-image", r)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_kubediffusers_names_win_over_livepeers_and_the_port_is_8000(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("KUBEDIFFUSERS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIPELINE", "upscale")
    monkeypatch.setenv("MODEL_ID", "stabilityai/stable-diffusion-x4-upscaler")
    settings = load_settings()
    assert (settings.task, settings.model_id, settings.port) == ("upscale", "stabilityai/stable-diffusion-x4-upscaler", 8000)
    monkeypatch.setenv("KUBEDIFFUSERS_TASK", "text-to-image")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_ID", "stabilityai/sd-turbo")
    assert (load_settings().task, load_settings().model_id) == ("text-to-image", "stabilityai/sd-turbo")


def test_livepeers_1024_example_fits_an_upscale_runner_under_compatibility() -> None:
    example = Image.new("RGB", (1024, 1024))  # livepeer's upscale example image is 1024x1024
    native = RunnerSettings(task="upscale", model_id="a/b")
    with pytest.raises(InvalidInput, match="at most 2359296"):
        check_upscaled_size(example, 4, native)
    livepeer = RunnerSettings(task="upscale", model_id="a/b", compatibility="livepeer")
    check_upscaled_size(example, 4, livepeer)  # 4096x4096 out
    assert livepeer.max_pixels == 4096 * 4096
    # A limit the operator set stays; other tasks keep theirs.
    assert RunnerSettings(task="upscale", model_id="a/b", compatibility="livepeer", max_pixels=1024 * 1024).max_pixels == 1024 * 1024
    assert RunnerSettings(task="text-to-image", model_id="a/b", compatibility="livepeer").max_pixels == native.max_pixels
