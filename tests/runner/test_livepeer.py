"""A go-livepeer orchestrator pointed at a kubediffusers runner: requests built as
go-livepeer's ai/worker client builds them, from every field of livepeer's
request schemas, against real uvicorn servers; every answer is validated
against livepeer ai-runner's own OpenAPI document (compat_schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubediffusers.runner.app import create_app
from kubediffusers.runner.dev.tiny import tiny_model_id
from tests.runner.compat_schemas import check_livepeer, livepeer_request_schema
from tests.runner.helpers import ThreadedServer, png, settings_for

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = {"text-to-image": "/text-to-image", "image-to-image": "/image-to-image", "image-to-video": "/image-to-video", "upscale": "/upscale"}

# Every field of livepeer's request schema per route, with values the tiny models run fast.
VALUES: dict[str, dict[str, Any]] = {
    "text-to-image": {
        "loras": "",
        "prompt": "a red cube",
        "height": 64,
        "width": 64,
        "guidance_scale": 7.5,
        "negative_prompt": "blurry",
        "safety_check": True,
        "seed": 7,
        "num_inference_steps": 2,
        "num_images_per_prompt": 2,
    },
    "image-to-image": {
        "prompt": "a red cube",
        "loras": "",
        "strength": 0.8,
        "guidance_scale": 7.5,
        "image_guidance_scale": 1.5,
        "negative_prompt": "",
        "safety_check": True,
        "seed": 7,
        "num_inference_steps": 2,
        "num_images_per_prompt": 1,
    },
    "image-to-video": {
        "height": 32,
        "width": 32,
        "fps": 6,
        "motion_bucket_id": 127,
        "noise_aug_strength": 0.02,
        "safety_check": True,
        "seed": 7,
        "num_inference_steps": 1,
    },
    "upscale": {"prompt": "a red cube", "safety_check": True, "seed": 7, "num_inference_steps": 2},
}


def go_value(value: Any) -> str:
    """How ai/worker/multipart.go writes a form field: %f for floats, FormatBool, Itoa."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


def livepeer_request(client: httpx.Client, task: str, path: str | None = None, headers: dict[str, str] | None = None, **changes: Any) -> httpx.Response:
    """One request with every field of livepeer's schema for the route (model_id: the served model)."""
    path = path or ROUTES[task]
    schema = livepeer_request_schema(ROUTES[task])
    fields = {"model_id": tiny_model_id(task), **VALUES[task], **changes}
    fields = {k: v for k, v in fields.items() if v is not None}
    assert set(fields) - {"image"} <= set(schema["properties"]), "only livepeer's fields"
    if task == "text-to-image":
        assert set(VALUES[task]) | {"model_id"} == set(schema["properties"]), "every field of livepeer's schema"
        return client.post(path, json=fields, headers=headers or AUTH)  # GenTextToImageJSONRequestBody
    assert set(VALUES[task]) | {"model_id", "image"} == set(schema["properties"]), "every field of livepeer's schema"
    size = (32, 32)
    files = {"image": ("input.png", png(size), "image/png")}
    return client.post(path, data={k: go_value(v) for k, v in fields.items()}, files=files, headers=headers or AUTH)


@pytest.fixture(scope="module")
def servers(model_dir: Path) -> Iterator[dict[tuple[str, str], ThreadedServer]]:
    """A real server per task, natively and under compatibility livepeer."""
    started: dict[tuple[str, str], ThreadedServer] = {}
    try:
        for task in ROUTES:
            for mode in ("none", "livepeer"):
                server = ThreadedServer(create_app(settings_for(model_dir, task, compatibility=mode, auth_token=TOKEN, max_upload_bytes=200_000)))
                started[(task, mode)] = server.__enter__()
        yield started
    finally:
        for server in started.values():
            server.__exit__(None, None, None)


def client_of(server: ThreadedServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120)


@pytest.mark.parametrize("mode", ["none", "livepeer"])
@pytest.mark.parametrize("task", list(ROUTES))
def test_every_livepeer_field_is_accepted_and_the_answer_is_livepeers(servers: dict, task: str, mode: str) -> None:
    with client_of(servers[(task, mode)]) as client:
        r = livepeer_request(client, task)
        assert r.status_code == 200, r.text
        check_livepeer(ROUTES[task], r)
        body = r.json()
        media = body["frames"][0] if task == "image-to-video" else body["images"]
        assert [m["seed"] for m in media][:2] == ([7, 7] if task == "image-to-video" else [7, 8][: len(media)])
        # livepeer's trailing-slash twin of the route answers the same.
        again = livepeer_request(client, task, path=ROUTES[task] + "/")
        assert again.status_code == 200, again.text
        check_livepeer(ROUTES[task], again)
        assert again.json() == body


@pytest.mark.parametrize("mode", ["none", "livepeer"])
@pytest.mark.parametrize("task", list(ROUTES))
def test_livepeer_error_cases_have_livepeers_statuses_and_shapes(servers: dict, task: str, mode: str) -> None:
    """400, 401 and 422 are livepeer's shapes natively too; compatibility livepeer only maps statuses it does not declare."""
    path = ROUTES[task]
    with client_of(servers[(task, mode)]) as client:
        wrong_model = livepeer_request(client, task, model_id="someone/else")
        check_livepeer(path, wrong_model)
        assert wrong_model.status_code == 400
        assert wrong_model.json()["detail"]["msg"] == f"pipeline configured with {tiny_model_id(task)} but called with someone/else."

        unauthorized = livepeer_request(client, task, headers={"Authorization": "Bearer wrong"})
        check_livepeer(path, unauthorized)
        assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"

        if "loras" in livepeer_request_schema(path)["properties"]:
            lora = livepeer_request(client, task, loras=json.dumps({"latent-consistency/lcm-lora-sdv1-5": 1.0}))
            check_livepeer(path, lora)
            assert lora.status_code == 400 and "it declares none" in lora.json()["detail"]["msg"]
            not_json = livepeer_request(client, task, loras="{not json")
            check_livepeer(path, not_json)
            assert not_json.status_code == 400 and "JSON" in not_json.json()["detail"]["msg"]
            five = json.dumps({f"owner/lora-{i}": 0.5 for i in range(5)})
            too_many = livepeer_request(client, task, loras=five)
            check_livepeer(path, too_many)
            assert too_many.status_code == 400 and "at most 4" in too_many.json()["detail"]["msg"]

        bad_type = livepeer_request(client, task, seed="many")
        check_livepeer(path, bad_type)
        assert bad_type.status_code == 422
        assert bad_type.json()["detail"][0]["loc"] == ["body", "seed"]

        too_large = client.post(path, content=b"x" * 300_000, headers={**AUTH, "content-type": "application/json"})
        if mode == "livepeer":
            check_livepeer(path, too_large)  # 413 natively: a 400 here
        assert too_large.status_code == (400 if mode == "livepeer" else 413) and "larger than" in too_large.json()["detail"]["msg"]

        if "prompt" in VALUES[task]:
            empty = livepeer_request(client, task, prompt="")
            check_livepeer(path, empty)
            if task == "text-to-image":  # livepeer's routes/text_to_image.py checks the JSON prompt itself
                assert empty.status_code == 400 and empty.json() == {"detail": {"msg": "Prompt must be provided."}}
            else:  # FastAPI (livepeer's too) reads an empty required form field as missing
                assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "prompt"]
            missing = livepeer_request(client, task, prompt=None)
            check_livepeer(path, missing)
            assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "prompt"]


@pytest.mark.parametrize("mode", ["none", "livepeer"])
def test_version_hardware_and_health_follow_livepeers_schemas(servers: dict, mode: str) -> None:
    with client_of(servers[("text-to-image", mode)]) as client:
        for path in ("/version", "/hardware/info", "/hardware/stats", "/health"):
            for variant in (path, path + "/"):
                r = client.get(variant)
                assert r.status_code == 200, (variant, r.text)
                check_livepeer(path, r, method="get")
        version = client.get("/version").json()
        assert version["pipeline"] == "text-to-image" and version["model_id"] == tiny_model_id("text-to-image")
        assert version["version"].count(".") == 2 and version["version"] != "0.0.0"
        assert client.get("/hardware/info").json()["gpu_info"] == {}  # no CUDA here: empty but valid
        assert client.get("/health/").json()["status"] == "OK"


def test_livepeers_defaults_apply_under_compatibility_only(servers: dict) -> None:
    """Steps 100 for image-to-image, 75 for upscale, 576x1024 and fps 6, decode chunks of 4 for video (livepeer's defaults)."""
    seen: dict[str, Any] = {}
    for task, mode in (("image-to-image", "livepeer"), ("upscale", "livepeer"), ("image-to-video", "livepeer"), ("image-to-image", "none")):
        pipeline = servers[(task, mode)].app.state.context.model.pipeline
        real = pipeline.run

        def record(work: Any, on_step: Any = None, real: Any = real, key: str = f"{task}/{mode}") -> Any:
            seen[key] = work.params
            return real(work, on_step)

        pipeline.run = record
        try:
            with client_of(servers[(task, mode)]) as client:
                # The video stays cheap (1 step, 32x32): its fps and decode chunks are left unset.
                unset = {"fps": None} if task == "image-to-video" else {"num_inference_steps": None}
                r = livepeer_request(client, task, **unset)
                assert r.status_code == 200, r.text
                check_livepeer(ROUTES[task], r)
        finally:
            pipeline.run = real
    assert seen["image-to-image/livepeer"].num_inference_steps == 100
    assert seen["upscale/livepeer"].num_inference_steps == 75
    video = seen["image-to-video/livepeer"]
    assert (video.fps, video.decode_chunk_size) == (6, 4)
    assert seen["image-to-image/none"].num_inference_steps == 50


def test_livepeer_size_defaults_for_text_to_image(model_dir: Path) -> None:
    from kubediffusers.runner.compat.livepeer import apply_defaults
    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.tasks import TASKS, Task

    params = TextToImageParams(prompt="x")
    apply_defaults(TASKS[Task.TEXT_TO_IMAGE], params)
    assert (params.height, params.width) == (576, 1024)
    chosen = TextToImageParams(prompt="x", height=64)
    apply_defaults(TASKS[Task.TEXT_TO_IMAGE], chosen)
    assert (chosen.height, chosen.width) == (64, 1024)
    # Defaults stay defaults: a runner allowing fewer steps caps them instead of refusing.
    capped = TextToImageParams(prompt="x")
    apply_defaults(TASKS[Task.IMAGE_TO_IMAGE], capped)
    assert "num_inference_steps" not in capped.model_fields_set
