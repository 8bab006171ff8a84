"""FLUX.1 end to end over HTTP on the CPU with default settings: the tiny
schnell-shaped checkpoint serves text-to-image, image-to-image and inpainting;
the family's defaults and limits hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from kubediffusers.runner.families import family_of
from kubediffusers.runner.settings import Task
from tests.runner.helpers import assert_error, decode, half_mask, png

FLUX = tiny_model_id("text-to-image", "flux")


@pytest.fixture(scope="module")
def flux(model_dir: Path) -> Path:
    return ensure_tiny_model("text-to-image", model_dir, arch="flux")


def test_the_tiny_checkpoint_is_recognised(flux: Path) -> None:
    row = family_of(flux)
    assert row is not None and row.name == "flux-schnell" and row.tasks == {Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}


def test_text_to_image_with_default_settings_and_defaults(flux: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=FLUX)
    assert client.get("/health").json()["status"] == "OK"
    pipeline = client.app.state.context.model.pipeline  # type: ignore[attr-defined]
    assert pipeline.family.name == "flux-schnell"
    r = client.post("/text-to-image", json={"prompt": "a castle", "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()["images"][0]
    assert decode(body["url"]).size == (128, 128)  # the pipeline's default sample size x the VAE factor
    again = client.post("/text-to-image", json={"prompt": "a castle", "seed": 1})
    assert again.json()["images"][0]["url"] == body["url"]  # seeded: reproducible
    r = client.post("/text-to-image", json={"prompt": "a castle", "seed": 1, "width": 64, "height": 48, "max_sequence_length": 32, "num_images_per_prompt": 2})
    assert r.status_code == 200, r.text
    assert [decode(i["url"]).size for i in r.json()["images"]] == [(64, 48), (64, 48)]


def test_true_cfg_with_a_negative_prompt(flux: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=FLUX)
    r = client.post("/text-to-image", json={"prompt": "a castle", "negative_prompt": "fog", "true_cfg_scale": 4, "width": 64, "height": 64, "seed": 2})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"width": 100}, 400, "width must be a multiple of 8"),
        ({"negative_prompt": "fog"}, 400, "reads negative_prompt only with true_cfg_scale above 1"),
        ({"max_sequence_length": 5000}, 422, "max_sequence_length"),
        ({"true_cfg_scale": -1}, 422, "true_cfg_scale"),
        ({"width": 4096, "height": 4096}, 400, "this runner allows at most"),
    ],
)
def test_bad_text_to_image_requests(flux: Path, make_client, body: dict, status: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=FLUX)
    r = client.post("/text-to-image", json={"prompt": "a castle", **body})
    if status == 422:
        assert r.status_code == 422 and fragment in r.text, r.text
    else:
        assert_error(r, status, fragment)


def test_image_to_image_keeps_the_input_size(flux: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-image", model_id=FLUX)
    r = client.post("/image-to-image", data={"prompt": "a castle", "strength": "0.5", "seed": "1"}, files={"image": ("in.png", png((64, 48)), "image/png")})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 48)
    r = client.post("/image-to-image", data={"prompt": "a castle", "height": "60"}, files={"image": ("in.png", png((64, 48)), "image/png")})
    assert_error(r, 400, "height must be a multiple of 8")


def test_inpainting(flux: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("inpainting", model_id=FLUX)
    files = {"image": ("in.png", png((64, 64)), "image/png"), "mask_image": ("m.png", half_mask((64, 64)), "image/png")}
    r = client.post("/inpainting", data={"prompt": "a door", "seed": "1"}, files=files)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)
    files["mask_image"] = ("m.png", half_mask((32, 64)), "image/png")
    assert_error(client.post("/inpainting", data={"prompt": "a door"}, files=files), 400, "the mask must have the image's size")


def test_flux_dev_is_told_apart_by_its_guidance_embedding_and_takes_its_defaults(model_dir: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    from kubediffusers.runner.params import TextToImageParams

    dev = ensure_tiny_model("text-to-image", model_dir, arch="flux-dev")
    row = family_of(dev)
    assert row is not None and row.name == "flux-dev"
    client: TestClient = make_client("text-to-image", model_id=tiny_model_id("text-to-image", "flux-dev"), max_steps=30)
    pipeline = client.app.state.context.model.pipeline  # type: ignore[attr-defined]
    settings = client.app.state.context.settings  # type: ignore[attr-defined]
    defaults = pipeline.with_family_defaults(TextToImageParams(prompt="a castle"), settings)
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (28, 3.5)  # distilled guidance, embedded
    assert pipeline.family_arguments(pipeline.prepare(defaults, {}, settings), {})["max_sequence_length"] == 512
    r = client.post("/text-to-image", json={"prompt": "a castle", "seed": 1, "num_inference_steps": 2, "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)
