"""Image to video (Stable Video Diffusion) end to end: frames as JSON, mp4, limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from tests.runner.helpers import ThreadedServer, assert_error, decode, mp4_frames, png, ready_client, settings_for

FAST = {"num_inference_steps": "1", "seed": "9"}


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, "image-to-video", max_video_frames=5)))


def video(client: TestClient, image: bytes | None = None, headers: dict[str, str] | None = None, **data: str):  # type: ignore[no-untyped-def]
    files = {"image": ("first.png", image if image is not None else png((32, 32)), "image/png")}
    return client.post("/image-to-video", data={**FAST, **data}, files=files, headers=headers or {})


def test_frames_as_json_in_ai_runner_shape(client: TestClient) -> None:
    r = video(client, num_frames="3")
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["frames"] and len(body["frames"]) == 1
    frames = body["frames"][0]
    assert len(frames) == 3
    assert all(f["seed"] == 9 and f["nsfw"] is False for f in frames)
    assert all(decode(f["url"]).size == (32, 32) for f in frames)


def test_default_length_is_the_models(client: TestClient) -> None:
    r = video(client)
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"][0]) == 4  # the tiny UNet's num_frames


def test_same_seed_same_video(client: TestClient) -> None:
    first = video(client, num_frames="2", seed="21").json()["frames"][0]
    again = video(client, num_frames="2", seed="21").json()["frames"][0]
    other = video(client, num_frames="2", seed="22").json()["frames"][0]
    assert [decode(f["url"]).tobytes() for f in first] == [decode(f["url"]).tobytes() for f in again]
    assert decode(first[0]["url"]).tobytes() != decode(other[0]["url"]).tobytes()


def test_accept_mp4_returns_an_h264_file_with_the_frames_and_fps(client: TestClient) -> None:
    r = video(client, headers={"Accept": "video/mp4"}, num_frames="3", fps="12", width="48", height="32")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["x-seed"] == "9" and r.headers["x-frames"] == "3"
    frames, rate = mp4_frames(r.content)
    assert len(frames) == 3 and frames[0].size == (48, 32)
    assert rate == 12


def test_the_input_is_trimmed_to_the_models_size_step(client: TestClient) -> None:
    r = video(client, image=png((44, 37)), num_frames="2")
    assert r.status_code == 200, r.text
    assert decode(r.json()["frames"][0][0]["url"]).size == (40, 32)


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        ({"num_frames": "6"}, 400, "at most 5"),
        ({"num_frames": "1"}, 422, "num_frames"),
        ({"fps": "0"}, 422, "fps"),
        ({"fps": "61"}, 422, "fps"),
        ({"motion_bucket_id": "-1"}, 422, "motion_bucket_id"),
        ({"noise_aug_strength": "1.5"}, 422, "noise_aug_strength"),
        ({"decode_chunk_size": "0"}, 422, "decode_chunk_size"),
        ({"min_guidance_scale": "3", "max_guidance_scale": "2"}, 422, "min_guidance_scale must not exceed"),
        ({"num_inference_steps": "151"}, 400, "at most 150"),
        ({"width": "36", "height": "32"}, 400, "multiple of 8"),
        ({"prompt": "a cat"}, 400, "Stable Video Diffusion takes no prompt"),
        ({"guidance_scale": "2"}, 400, "guidance_scale: Stable Video Diffusion takes no prompt"),
    ],
)
def test_bad_video_inputs(client: TestClient, data: dict, status: int, fragment: str) -> None:
    assert_error(video(client, **data), status, fragment)


def test_missing_or_unreadable_image(client: TestClient) -> None:
    assert_error(client.post("/image-to-video", data=FAST), 422, "image")
    assert_error(video(client, image=b"\x00\x01 not a picture"), 400, "not a readable image")


def test_mp4_over_a_real_socket(model_dir: Path) -> None:
    with ThreadedServer(create_app(settings_for(model_dir, "image-to-video"))) as server:
        r = httpx.post(
            server.url + "/image-to-video",
            data={**FAST, "num_frames": "2"},
            files={"image": ("first.png", png((32, 32)), "image/png")},
            headers={"Accept": "video/mp4"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    frames, _ = mp4_frames(r.content)
    assert len(frames) == 2 and frames[0].size == (32, 32)
