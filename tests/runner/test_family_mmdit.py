"""Stable Diffusion 3 / 3.5 and Z-Image end to end over HTTP on the CPU with
default settings: the tiny SD3-shaped checkpoint (two CLIPs and T5, 2x2
patches) and the tiny Z-Image-shaped one (Qwen3 text encoder, chat-formatted
prompts) each serve text-to-image, image-to-image and inpainting; sizes are
multiples of 16 (the VAE's 8 x the patch's 2), and Flux-only fields are refused.
Both 64x64 defaults: SD3's transformer sample_size 8 x the VAE's 8; Z-Image's
VAE sample size (its pipeline hard-codes 1024, its VAE says so)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from kubediffusers.runner.families import family_of
from tests.runner.helpers import assert_error, decode, half_mask, png

FAMILIES = {"sd3": "stable-diffusion-3", "z-image": "z-image"}  # tiny arch -> family row


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def arch(request: pytest.FixtureRequest, model_dir: Path) -> str:
    ensure_tiny_model("text-to-image", model_dir, arch=request.param)
    return str(request.param)


def test_the_tiny_checkpoint_is_recognised(arch: str, model_dir: Path) -> None:
    row = family_of(ensure_tiny_model("text-to-image", model_dir, arch=arch))
    assert row is not None and row.name == FAMILIES[arch] and row.gpu_dtype == "bfloat16"


def test_text_to_image_with_default_settings(arch: str, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=tiny_model_id("text-to-image", arch))
    r = client.post("/text-to-image", json={"prompt": "a castle", "seed": 1})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)
    r = client.post("/text-to-image", json={"prompt": "a castle", "negative_prompt": "fog", "width": 32, "height": 48, "max_sequence_length": 16})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (32, 48)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"width": 40}, "width must be a multiple of 16 for this model, got 40"),
        ({"true_cfg_scale": 3}, "true_cfg_scale applies to FLUX checkpoints only"),
    ],
)
def test_bad_requests(arch: str, make_client, body: dict, fragment: str) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=tiny_model_id("text-to-image", arch))
    assert_error(client.post("/text-to-image", json={"prompt": "a castle", **body}), 400, fragment)


def test_image_to_image_trims_the_input_to_the_size_step(arch: str, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-image", model_id=tiny_model_id("text-to-image", arch))
    r = client.post("/image-to-image", data={"prompt": "a castle", "strength": "0.5", "seed": "1"}, files={"image": ("in.png", png((72, 40)), "image/png")})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 32)


def test_inpainting(arch: str, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("inpainting", model_id=tiny_model_id("text-to-image", arch))
    files = {"image": ("in.png", png((64, 64)), "image/png"), "mask_image": ("m.png", half_mask((64, 64)), "image/png")}
    r = client.post("/inpainting", data={"prompt": "a door", "seed": "1"}, files=files)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)
    assert_error(client.post("/inpainting", data={"prompt": "a door", "width": "24"}, files=files), 400, "multiple of 16")
