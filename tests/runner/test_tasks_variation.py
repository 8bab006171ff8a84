"""Image variation end to end over HTTP (CLIP image conditioning, no prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from tests.runner.helpers import STEPS, ThreadedServer, assert_error, decode, png, ready_client, settings_for


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, "image-variation")))


def vary(client: TestClient, image: bytes | None = None, **data: str):  # type: ignore[no-untyped-def]
    files = {"image": ("in.png", image if image is not None else png((40, 40)), "image/png")}
    return client.post("/image-variation", data={"num_inference_steps": str(STEPS), **data}, files=files)


def test_variations_at_the_models_size_with_seeds(client: TestClient) -> None:
    r = vary(client, seed="8", num_images_per_prompt="2")
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [i["seed"] for i in images] == [8, 9]
    assert all(decode(i["url"]).size == (64, 64) for i in images)
    again = vary(client, seed="9").json()["images"][0]
    assert decode(again["url"]).tobytes() == decode(images[1]["url"]).tobytes()


def test_requested_size(client: TestClient) -> None:
    r = vary(client, width="48", height="32")
    assert decode(r.json()["images"][0]["url"]).size == (48, 32)


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        ({"prompt": "a dog"}, 422, "prompt"),
        ({"guidance_scale": "-1"}, 422, "guidance_scale"),
        ({"num_inference_steps": "151"}, 400, "at most 150"),
        ({"width": "60", "height": "64"}, 400, "multiple of 8"),
        ({"seed": "-3"}, 422, "seed"),
    ],
)
def test_bad_variation_inputs(client: TestClient, data: dict, status: int, fragment: str) -> None:
    assert_error(vary(client, **data), status, fragment)


def test_missing_or_unreadable_image(client: TestClient) -> None:
    assert_error(client.post("/image-variation", data={}), 422, "image")
    assert_error(vary(client, image=b""), 400, "empty")


def test_variation_over_a_real_socket(model_dir: Path) -> None:
    import httpx

    with ThreadedServer(create_app(settings_for(model_dir, "image-variation"))) as server:
        r = httpx.post(
            server.url + "/image-variation",
            data={"num_inference_steps": "1", "seed": "4"},
            files={"image": ("in.png", png((32, 32)), "image/png")},
            headers={"Accept": "image/png"},
            timeout=60,
        )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "4"
