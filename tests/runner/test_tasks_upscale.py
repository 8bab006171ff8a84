"""The x4 upscaler end to end over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from tests.runner.helpers import STEPS, assert_error, decode, png, ready_client, settings_for


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, "upscale")))


def upscale(client: TestClient, image: bytes | None = None, **data: str):  # type: ignore[no-untyped-def]
    files = {"image": ("small.png", image if image is not None else png((16, 24)), "image/png")}
    return client.post("/upscale", data={"prompt": "a sharp photo", "num_inference_steps": str(STEPS), **data}, files=files)


def test_upscale_is_four_times_larger_per_side(client: TestClient) -> None:
    r = upscale(client, seed="3", num_images_per_prompt="2")
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [i["seed"] for i in images] == [3, 4]
    assert all(decode(i["url"]).size == (64, 96) for i in images)


def test_second_image_equals_its_seed_alone(client: TestClient) -> None:
    batch = upscale(client, seed="30", num_images_per_prompt="2").json()["images"]
    alone = upscale(client, seed="31").json()["images"]
    assert decode(batch[1]["url"]).tobytes() == decode(alone[0]["url"]).tobytes()


def test_sides_are_trimmed_to_multiples_of_8(client: TestClient) -> None:
    r = upscale(client, image=png((20, 17)))
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 64)


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        ({"noise_level": "351"}, 422, "noise_level"),
        ({"noise_level": "-1"}, 422, "noise_level"),
        ({"prompt": ""}, 422, "prompt"),
        ({"num_images_per_prompt": "5"}, 400, "at most 4"),
        ({"strength": "0.5"}, 422, "strength"),
    ],
)
def test_bad_upscale_inputs(client: TestClient, data: dict, status: int, fragment: str) -> None:
    assert_error(upscale(client, **data), status, fragment)


def test_missing_or_unreadable_image(client: TestClient) -> None:
    assert_error(client.post("/upscale", data={"prompt": "x"}), 422, "image")
    assert_error(upscale(client, image=b"plain text"), 400, "not a readable image")


def test_output_larger_than_the_pixel_limit_is_refused(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("upscale", max_pixels=64 * 64)
    assert_error(upscale(client, image=png((32, 32))), 400, "gives 128x128")
    r = upscale(client, image=png((16, 16)))
    assert r.status_code == 200, r.text
