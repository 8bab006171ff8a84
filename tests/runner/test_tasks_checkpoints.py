"""Pipelines chosen from the task and the checkpoint: SDXL serves the image
tasks, and a checkpoint that cannot serve the task says so in /health."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.fetch.marker import repo_folder
from kubediffusers.runner.pipelines.support import check_task_support, tasks_of
from kubediffusers.runner.settings import Task
from tests.runner.helpers import STEPS, decode, half_mask, png

SDXL = tiny_model_id("text-to-image", "sdxl")


def test_sdxl_id() -> None:
    assert SDXL == "kubediffusers/tiny-sdxl"
    assert tiny_model_id("text-to-image", "sd") == "kubediffusers/tiny-text-to-image"


def test_sdxl_serves_text_to_image(make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=SDXL)
    r = client.post("/text-to-image", json={"prompt": "a castle", "num_inference_steps": STEPS, "seed": 1, "width": 48})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (48, 64)


def test_sdxl_serves_image_to_image(make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-image", model_id=SDXL)
    r = client.post(
        "/image-to-image",
        data={"prompt": "a castle", "num_inference_steps": "4", "strength": "0.5", "seed": "1"},
        files={"image": ("in.png", png((64, 48)), "image/png")},
    )
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 48)


def test_sdxl_serves_inpainting(make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("inpainting", model_id=SDXL)
    r = client.post(
        "/inpainting",
        data={"prompt": "a door", "num_inference_steps": str(STEPS), "seed": "1"},
        files={"image": ("in.png", png((64, 64)), "image/png"), "mask_image": ("m.png", half_mask((64, 64)), "image/png")},
    )
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)


@pytest.mark.parametrize(
    ("task", "model_task", "fragment"),
    [
        ("text-to-image", "image-to-video", "(StableVideoDiffusionPipeline) cannot serve text-to-image; it serves image-to-video"),
        ("text-to-image", "inpainting", "(StableDiffusionInpaintPipeline) cannot serve text-to-image; it serves inpainting"),
        ("image-to-video", "text-to-image", "(StableDiffusionPipeline) cannot serve image-to-video"),
        ("upscale", "image-variation", "(StableDiffusionImageVariationPipeline) cannot serve upscale"),
        ("image-variation", "upscale", "(StableDiffusionUpscalePipeline) cannot serve image-variation"),
    ],
)
def test_a_checkpoint_that_cannot_serve_the_task_is_not_ready_with_the_reason(
    make_client,
    task: str,
    model_task: str,
    fragment: str,  # type: ignore[no-untyped-def]
) -> None:
    client: TestClient = make_client(task, model_id=tiny_model_id(model_task))
    health = client.get("/health").json()
    assert health["status"] == "ERROR"
    assert f"model {tiny_model_id(model_task)} {fragment}" in health["detail"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and fragment in ready.json()["detail"]["msg"]


def test_a_checkpoint_of_an_unknown_family_is_not_served(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "SomeFuturePipeline"}')
    assert tasks_of(tmp_path) is None
    with pytest.raises(ModelUnavailable, match=r"\(SomeFuturePipeline\) is of a family this runner does not know; it serves stable-diffusion, .*flux-schnell"):
        check_task_support(tmp_path, Task.TEXT_TO_IMAGE, "org/future")
    with pytest.raises(ModelUnavailable, match="needs a StableVideoDiffusionPipeline, WanImageToVideoPipeline or LTXPipeline checkpoint"):
        check_task_support(tmp_path, Task.IMAGE_TO_VIDEO, "org/future")


def test_tiny_builds_are_idempotent(model_dir: Path) -> None:
    started = time.monotonic()
    snapshot = ensure_tiny_model("text-to-image", model_dir, arch="sdxl")
    assert time.monotonic() - started < 0.5  # already there: nothing rebuilt
    assert snapshot.parent.parent == repo_folder(model_dir, SDXL)
    assert (snapshot / "text_encoder_2" / "model.safetensors").is_file()


def test_tiny_cli_refuses_an_architecture_that_cannot_serve_the_task(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubediffusers.runner.dev.tiny", "--task", "image-to-video", "--arch", "sdxl", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the tiny sdxl architecture cannot serve image-to-video" in result.stderr


def test_the_sdxl_refiner_refines_but_cannot_start_from_noise(tmp_path: Path) -> None:
    # The refiner's model_index.json: no first text encoder, and an img2img class.
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [null, null], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}'
    )
    assert tasks_of(tmp_path) == {Task.IMAGE_TO_IMAGE, Task.INPAINTING}
    with pytest.raises(ModelUnavailable, match="cannot serve text-to-image; it serves image-to-image, inpainting"):
        check_task_support(tmp_path, Task.TEXT_TO_IMAGE, "stabilityai/stable-diffusion-xl-refiner-1.0")


def test_the_tiny_sdxl_checkpoint_is_recognised_as_sdxl(model_dir: Path) -> None:
    snapshot = ensure_tiny_model("text-to-image", model_dir, arch="sdxl")
    assert tasks_of(snapshot) == {Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}
