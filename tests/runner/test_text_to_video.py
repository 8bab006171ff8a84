"""The text-to-video task on its default tiny model (Wan): route, formats, async jobs, limits, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import main, tiny_model_id
from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.pipelines.support import check_task_support
from kubediffusers.runner.settings import Task
from tests.runner.helpers import assert_error, decode, mp4_frames, ready_client, settings_for
from tests.runner.video_helpers import t2v, wait_job

OPENAPI = Path(__file__).resolve().parents[2] / "runner" / "openapi.json"


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, "text-to-video", max_video_frames=9)))


def test_the_default_tiny_model_is_wan(model_dir: Path) -> None:
    assert tiny_model_id("text-to-video") == "kubediffusers/tiny-text-to-video"
    assert tiny_model_id("text-to-video", "wan") == "kubediffusers/tiny-text-to-video"
    assert tiny_model_id("text-to-video", "ltx") == "kubediffusers/tiny-ltx"


def test_only_the_served_route_exists(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/text-to-video" in paths and "/text-to-image" not in paths and "/image-to-video" not in paths


def test_route_is_in_the_committed_openapi_document() -> None:
    doc = json.loads(OPENAPI.read_text())
    body = doc["paths"]["/text-to-video"]["post"]
    assert body["operationId"] == "text_to_video"
    schema = doc["components"]["schemas"]["TextToVideoParams"]
    assert {"prompt", "negative_prompt", "num_frames", "fps", "guidance_scale", "height", "width"} <= set(schema["properties"])
    assert schema["required"] == ["prompt"]


def test_frames_as_json(client: TestClient) -> None:
    r = t2v(client, num_frames=5, height=16, width=32)
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    assert len(frames) == 1 and len(frames[0]) == 5
    assert all(f["seed"] == 9 and f["nsfw"] is False for f in frames[0])
    assert decode(frames[0][0]["url"]).size == (32, 16)


def test_mp4_with_the_requested_fps(client: TestClient) -> None:
    r = t2v(client, headers={"Accept": "video/mp4"}, num_frames=5, height=16, width=16, fps=12)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and r.headers["x-frames"] == "5"
    frames, rate = mp4_frames(r.content)
    assert len(frames) == 5 and frames[0].size == (16, 16) and rate == 12


def test_default_length_is_capped_by_the_runners_limit(client: TestClient) -> None:
    # Wan's 81 frames, shortened to the largest 4k+1 within max_video_frames=9.
    r = t2v(client, height=16, width=16)
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"][0]) == 9


def test_async_job_gives_the_frames_and_the_mp4(client: TestClient) -> None:
    r = t2v(client, query="?async=true", num_frames=5, height=16, width=16)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["task"] == "text-to-video"
    assert wait_job(client, job["id"])["status"] == "done"
    body = client.get(f"/jobs/{job['id']}/result").json()
    assert len(body["frames"][0]) == 5
    mp4 = client.get(f"/jobs/{job['id']}/result", headers={"Accept": "video/mp4"})
    assert mp4.headers["content-type"] == "video/mp4"
    assert len(mp4_frames(mp4.content)[0]) == 5


def test_same_seed_same_video(client: TestClient) -> None:
    def first_frame(seed: int) -> bytes:
        r = t2v(client, num_frames=1, height=16, width=16, seed=seed)
        assert r.status_code == 200, r.text
        return decode(r.json()["frames"][0][0]["url"]).tobytes()

    assert first_frame(3) == first_frame(3) != first_frame(4)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"num_frames": 6}, 400, "num_frames must be 4k+1 for WanPipeline, e.g. 5 or 9; got 6"),
        ({"num_frames": 13}, 400, "at most 9"),
        ({"num_frames": 0}, 422, "num_frames"),
        ({"height": 24, "width": 16}, 400, "height must be a multiple of 16 for WanPipeline"),
        ({"height": 16, "width": 40}, 400, "width must be a multiple of 16"),
        ({"height": 4096, "width": 4096}, 400, "this runner allows at most"),
        ({"fps": 0}, 422, "fps"),
        ({"fps": 61}, 422, "fps"),
        ({"guidance_scale": -1}, 422, "guidance_scale"),
        ({"num_inference_steps": 151}, 400, "at most 150"),
        ({"prompt": ""}, 400, "Prompt must be provided."),
        ({"image": "x"}, 422, "image"),
        ({"motion_bucket_id": 10}, 422, "motion_bucket_id"),
    ],
)
def test_bad_inputs(client: TestClient, body: dict, status: int, fragment: str) -> None:
    assert_error(t2v(client, **body), status, fragment)


def test_missing_prompt(client: TestClient) -> None:
    assert_error(client.post("/text-to-video", json={"num_inference_steps": 1}), 422, "prompt")


def test_image_checkpoints_cannot_serve_text_to_video(model_dir: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("text-to-video", model_id=tiny_model_id("text-to-image"))
    health = client.get("/health").json()
    assert health["status"] == "ERROR"
    assert "(StableDiffusionPipeline) cannot serve text-to-video; it serves image-to-image, inpainting, text-to-image" in health["detail"]
    assert_error(t2v(client), 503, "cannot serve text-to-video")


def test_unknown_family_names_the_video_families(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanVideoPipeline"}))
    with pytest.raises(ModelUnavailable, match="needs a WanPipeline or LTXPipeline checkpoint"):
        check_task_support(tmp_path, Task.TEXT_TO_VIDEO, "tencent/HunyuanVideo")


@pytest.mark.parametrize(
    ("argv", "model_id"),
    [
        (["--task", "text-to-video"], "kubediffusers/tiny-text-to-video"),
        (["--task", "image-to-video", "--arch", "wan"], "kubediffusers/tiny-wan-i2v"),
        (["--task", "image-to-video", "--arch", "ltx"], "kubediffusers/tiny-ltx"),
    ],
)
def test_the_tiny_model_cli_names_the_video_checkpoints(model_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], model_id: str) -> None:
    assert main([*argv, "--model-dir", str(model_dir)]) == 0
    assert f"tiny model {model_id} ready" in capsys.readouterr().out


@pytest.mark.parametrize(("task", "arch"), [("text-to-video", "svd"), ("text-to-video", "wan-i2v"), ("text-to-image", "wan")])
def test_the_tiny_model_cli_refuses_an_architecture_that_cannot_serve_the_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, arch: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", task, "--arch", arch, "--model-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"the tiny {arch} architecture cannot serve {task}" in capsys.readouterr().err
