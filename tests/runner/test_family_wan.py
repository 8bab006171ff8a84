"""Wan end to end over HTTP on the CPU with default settings: text-to-video
(WanPipeline, the task's default tiny model) and image-to-video
(WanImageToVideoPipeline, kubediffusers/tiny-wan-i2v), good and bad inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from tests.runner.helpers import ThreadedServer, assert_error, decode, mp4_frames, png, ready_client, settings_for
from tests.runner.video_helpers import i2v, t2v

WAN_I2V = tiny_model_id("image-to-video", "wan")


@pytest.fixture(scope="module")
def i2v_client(model_dir: Path) -> Iterator[TestClient]:
    ensure_tiny_model("image-to-video", model_dir, arch="wan")
    yield from ready_client(create_app(settings_for(model_dir, "image-to-video", model_id=WAN_I2V)))


def test_wan_i2v_is_its_own_checkpoint() -> None:
    assert WAN_I2V == "kubediffusers/tiny-wan-i2v"


def test_text_to_video_over_a_real_socket_with_default_settings(model_dir: Path) -> None:
    with ThreadedServer(create_app(settings_for(model_dir, "text-to-video"))) as server:
        assert httpx.get(server.url + "/health").json()["status"] == "OK"
        r = httpx.post(
            server.url + "/text-to-video",
            json={"prompt": "a red kite", "num_frames": 5, "height": 32, "width": 48, "num_inference_steps": 2, "seed": 1},
            headers={"Accept": "video/mp4"},
            timeout=120,
        )
    assert r.status_code == 200, r.text
    frames, rate = mp4_frames(r.content)
    assert len(frames) == 5 and frames[0].size == (48, 32) and rate == 16  # Wan's 16 fps


def test_image_to_video_frames(i2v_client: TestClient) -> None:
    r = i2v_client.get("/health").json()
    assert r["status"] == "OK", r
    r = i2v(i2v_client, num_frames=5)
    assert r.status_code == 200, r.text
    frames = r.json()["frames"][0]
    assert len(frames) == 5 and decode(frames[0]["url"]).size == (32, 32)


def test_image_to_video_trims_to_the_size_step_and_resizes(i2v_client: TestClient) -> None:
    r = i2v(i2v_client, image=png((44, 37)), num_frames=5)
    assert r.status_code == 200, r.text
    assert decode(r.json()["frames"][0][0]["url"]).size == (32, 32)  # multiples of 16
    r = i2v(i2v_client, num_frames=5, width=48, height=16, headers={"Accept": "video/mp4"})
    assert r.status_code == 200, r.text
    frames, rate = mp4_frames(r.content)
    assert frames[0].size == (48, 16) and rate == 16


def test_image_to_video_default_length_within_the_runners_limit(i2v_client: TestClient) -> None:
    r = i2v(i2v_client)
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"][0]) == 25  # Wan's 81, capped to max_video_frames (25), 4k+1


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        ({"prompt": "<unset>"}, 400, "prompt is required: WanImageToVideoPipeline"),
        ({"num_frames": 4}, 400, "num_frames must be 4k+1 for WanImageToVideoPipeline, e.g. 1 or 5; got 4"),
        ({"num_frames": 29}, 400, "at most 25"),
        ({"width": 40, "height": 32}, 400, "width must be a multiple of 16"),
        ({"motion_bucket_id": 50}, 400, "motion_bucket_id: Stable Video Diffusion parameters; WanImageToVideoPipeline does not take them"),
        ({"min_guidance_scale": 1, "noise_aug_strength": 0.1}, 400, "min_guidance_scale, noise_aug_strength: Stable Video"),
        ({"guidance_scale": 51}, 422, "guidance_scale"),
        ({"fps": 0}, 422, "fps"),
    ],
)
def test_bad_image_to_video_inputs(i2v_client: TestClient, data: dict, status: int, fragment: str) -> None:
    assert_error(i2v(i2v_client, **data), status, fragment)


def test_unreadable_image(i2v_client: TestClient) -> None:
    assert_error(i2v(i2v_client, image=b"not an image"), 400, "not a readable image")


def test_the_text_to_video_checkpoint_cannot_animate_an_image(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("image-to-video", model_id=tiny_model_id("text-to-video"))
    assert "(WanPipeline) cannot serve image-to-video; it serves text-to-video" in client.get("/health").json()["detail"]
    assert_error(i2v(client), 503, "cannot serve image-to-video")


def test_wan_t2v_steps_default_to_wans_and_guidance_is_honoured(make_client) -> None:  # type: ignore[no-untyped-def]
    # max_steps below Wan's 50: the default shortens to the limit instead of failing.
    client = make_client("text-to-video", max_steps=2)
    r = t2v(client, num_inference_steps=None, num_frames=1, height=16, width=16, guidance_scale=1.0)
    assert r.status_code == 422  # an explicit null is not a step count
    body = {"prompt": "a red kite", "num_frames": 1, "height": 16, "width": 16, "guidance_scale": 1.0, "seed": 1}
    r = client.post("/text-to-video", json=body)
    assert r.status_code == 200, r.text


def test_wan_keeps_its_own_attention_processors_under_the_default_sdpa_setting(i2v_client: TestClient) -> None:
    # Forcing AttnProcessor2_0 on a WanAttention fails ('no attribute spatial_norm'): UNets only.
    transformer = i2v_client.app.state.context.model.pipeline.pipe.transformer  # type: ignore[attr-defined]
    assert {type(p).__name__ for p in transformer.attn_processors.values()} == {"WanAttnProcessor"}
