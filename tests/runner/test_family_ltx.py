"""LTX-Video end to end over HTTP on the CPU with default settings: one
checkpoint (LTXPipeline, kubediffusers/tiny-ltx) serves text-to-video and
image-to-video; good and bad inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from tests.runner.helpers import assert_error, decode, mp4_frames, png, ready_client, settings_for
from tests.runner.video_helpers import i2v, t2v, wait_job

LTX = tiny_model_id("text-to-video", "ltx")


@pytest.fixture(scope="module")
def ltx_dir(model_dir: Path) -> Path:
    ensure_tiny_model("text-to-video", model_dir, arch="ltx")
    return model_dir


@pytest.fixture(scope="module")
def t2v_client(ltx_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(ltx_dir, "text-to-video", model_id=LTX)))


@pytest.fixture(scope="module")
def i2v_client(ltx_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(ltx_dir, "image-to-video", model_id=LTX)))


def test_one_checkpoint_for_both_tasks() -> None:
    assert LTX == tiny_model_id("image-to-video", "ltx") == "kubediffusers/tiny-ltx"


def test_text_to_video(t2v_client: TestClient) -> None:
    assert t2v_client.get("/health").json()["status"] == "OK"
    r = t2v(t2v_client, num_frames=5, height=32, width=64)
    assert r.status_code == 200, r.text
    frames = r.json()["frames"][0]
    assert len(frames) == 5 and decode(frames[0]["url"]).size == (64, 32)


def test_text_to_video_mp4_at_ltx_frame_rate(t2v_client: TestClient) -> None:
    r = t2v(t2v_client, headers={"Accept": "video/mp4"}, num_frames=5, height=32, width=32)
    assert r.status_code == 200, r.text
    frames, rate = mp4_frames(r.content)
    assert len(frames) == 5 and rate == 25  # LTX-Video's default frame rate


def test_text_to_video_async(t2v_client: TestClient) -> None:
    r = t2v(t2v_client, headers={"Prefer": "respond-async"}, num_frames=1, height=32, width=32, fps=8)
    assert r.status_code == 202, r.text
    assert wait_job(t2v_client, r.json()["id"])["status"] == "done"
    mp4 = t2v_client.get(f"/jobs/{r.json()['id']}/result", headers={"Accept": "video/mp4"})
    assert mp4_frames(mp4.content)[1] == 8


def test_image_to_video(i2v_client: TestClient) -> None:
    assert i2v_client.get("/health").json()["status"] == "OK"
    r = i2v(i2v_client, image=png((70, 40)), num_frames=5)
    assert r.status_code == 200, r.text
    frames = r.json()["frames"][0]
    assert len(frames) == 5 and decode(frames[0]["url"]).size == (64, 32)  # trimmed to multiples of 32


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"num_frames": 3}, 400, "num_frames must be 4k+1 for LTXPipeline, e.g. 1 or 5; got 3"),
        ({"height": 48, "width": 32}, 400, "height must be a multiple of 32 for LTXPipeline"),
        ({"num_frames": 29}, 400, "at most 25"),
        ({"guidance_scale": "x"}, 422, "guidance_scale"),
        ({"negative_prompt": "n" * 4001}, 422, "negative_prompt"),
    ],
)
def test_bad_text_to_video_inputs(t2v_client: TestClient, body: dict, status: int, fragment: str) -> None:
    assert_error(t2v(t2v_client, **body), status, fragment)


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        ({"prompt": "<unset>"}, 400, "prompt is required: LTXImageToVideoPipeline"),
        ({"num_frames": 6}, 400, "num_frames must be 4k+1 for LTXImageToVideoPipeline"),
        ({"width": 48, "height": 32}, 400, "width must be a multiple of 32"),
        ({"decode_chunk_size": 2}, 400, "decode_chunk_size: Stable Video Diffusion parameters"),
    ],
)
def test_bad_image_to_video_inputs(i2v_client: TestClient, data: dict, status: int, fragment: str) -> None:
    assert_error(i2v(i2v_client, **data), status, fragment)
