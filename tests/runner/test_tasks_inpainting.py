"""Inpainting end to end over HTTP: SD inpainting (9-channel UNet) and a plain SD checkpoint."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import tiny_model_id
from tests.runner.helpers import STEPS, assert_error, decode, half_mask, png, ready_client, settings_for


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, "inpainting")))


def inpaint(client: TestClient, image: bytes, mask: bytes | None, **data: str):  # type: ignore[no-untyped-def]
    files = {"image": ("in.png", image, "image/png")}
    if mask is not None:
        files["mask_image"] = ("mask.png", mask, "image/png")
    return client.post("/inpainting", data={"prompt": "a window", "num_inference_steps": str(STEPS), **data}, files=files)


def test_inpainting_keeps_the_size_and_reports_seeds(client: TestClient) -> None:
    r = inpaint(client, png((64, 48)), half_mask((64, 48)), seed="5", num_images_per_prompt="2")
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [i["seed"] for i in images] == [5, 6]
    assert all(decode(i["url"]).size == (64, 48) for i in images)
    assert decode(images[0]["url"]).tobytes() != decode(images[1]["url"]).tobytes()


def test_any_image_of_a_batch_is_reproduced_alone_from_its_seed(client: TestClient) -> None:
    batch = inpaint(client, png((64, 64)), half_mask((64, 64)), seed="11", num_images_per_prompt="2").json()["images"]
    alone = inpaint(client, png((64, 64)), half_mask((64, 64)), seed="12").json()["images"]
    assert decode(batch[1]["url"]).tobytes() == decode(alone[0]["url"]).tobytes()


def test_a_mask_with_the_same_aspect_ratio_is_scaled_to_the_image(client: TestClient) -> None:
    r = inpaint(client, png((64, 48)), half_mask((32, 24)), seed="1")
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 48)


def test_resize_applies_to_image_and_mask(client: TestClient) -> None:
    r = inpaint(client, png((64, 48)), half_mask((64, 48)), width="32", height="32")
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (32, 32)


def test_accept_png_returns_the_raw_image(client: TestClient) -> None:
    r = client.post(
        "/inpainting",
        data={"prompt": "x", "num_inference_steps": "1", "seed": "3"},
        files={"image": ("i.png", png((64, 64)), "image/png"), "mask_image": ("m.png", half_mask((64, 64)), "image/png")},
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "3"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


@pytest.mark.parametrize(
    ("image", "mask", "data", "status", "fragment"),
    [
        (png((64, 64)), None, {}, 422, "mask_image"),
        (png((64, 48)), half_mask((64, 64)), {}, 400, "aspect ratio"),
        (png((64, 64)), b"not an image at all", {}, 400, "mask_image: not a readable image"),
        (b"GIF89a broken", half_mask((64, 64)), {}, 400, "image: not a readable image"),
        (png((64, 64)), half_mask((64, 64)), {"strength": "0"}, 422, "strength"),
        (png((64, 64)), half_mask((64, 64)), {"strength": "0.1", "num_inference_steps": "5"}, 400, "at least 1"),
        (png((64, 64)), half_mask((64, 64)), {"width": "36", "height": "32"}, 400, "multiple of 8"),
        (png((64, 64)), half_mask((64, 64)), {"num_inference_steps": "151"}, 400, "at most 150"),
        (png((64, 64)), half_mask((64, 64)), {"prompt": ""}, 422, "prompt"),
    ],
)
def test_bad_inpainting_inputs(client: TestClient, image: bytes, mask: bytes | None, data: dict, status: int, fragment: str) -> None:
    assert_error(inpaint(client, image, mask, **data), status, fragment)


def test_missing_image_is_422(client: TestClient) -> None:
    r = client.post(
        "/inpainting",
        data={"prompt": "x"},
        files={"mask_image": ("m.png", half_mask((64, 64)), "image/png")},
    )
    assert_error(r, 422, "image")


def test_a_plain_stable_diffusion_checkpoint_serves_inpainting(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("inpainting", model_id=tiny_model_id("text-to-image"))
    assert client.get("/health").json()["status"] == "OK"
    r = inpaint(client, png((64, 48)), half_mask((64, 48)), seed="2")
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 48)
