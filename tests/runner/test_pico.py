"""A PICO client pointed at a kubediffusers runner: PICO's JSON request models
(API/*.py) replayed against real servers, answers validated against PICO's
response and error shapes (compat_schemas), clamping as ArgTransforms.py does."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from kubediffusers.runner.app import create_app
from kubediffusers.runner.compat.pico import steps_of
from kubediffusers.runner.dev.tiny import tiny_model_id
from tests.runner.compat_schemas import PICO_HEALTH_SCHEMA, check_pico
from tests.runner.helpers import ThreadedServer, gated, half_mask, metric, png, settings_for, wait_until

TOKEN = "pico-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHEAP = {"Quality": 0.008}  # round(250 x 0.008) = 2 steps


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Every field of PICO's request model per route (API/*.py), values the tiny models run fast.
TEXT = {
    "Model": "",
    "Phrase": "a red cube",
    "NegativePhrase": "blurry",
    "Total": 2,
    "Seed": 11,
    "GuidanceScale": 7.5,
    **CHEAP,
    "Precision": "half",
    "VaeType": "original",
    "AttentionSlicing": False,
}
REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # path: (task, PICO's layer name, body)
    "/api/v1/stable-diffusion": ("text-to-image", "StableDiffusion", TEXT),
    "/api/v1/stable-diffusion-2": ("text-to-image", "StableDiffusion2", TEXT),
    "/api/v1/stable-diffusion-xl": ("text-to-image", "StableDiffusionXL", TEXT),
    "/api/v1/stable-diffusion-image-to-image": (
        "image-to-image",
        "StableDiffusionImageToImage",
        {**TEXT, "ImageBase64": b64(png((32, 32))), "Strength": 0.8},
    ),
    "/api/v1/stable-diffusion-inpaint": (
        "inpainting",
        "StableDiffusionInpaint",
        {**TEXT, "ImageBase64": b64(png((32, 32))), "MaskImageBase64": b64(half_mask((32, 32)))},
    ),
    "/api/v1/stable-diffusion-image-variation": (
        "image-variation",
        "StableDiffusionImageVariation",
        {"ImageBase64": b64(png((32, 32))), "Total": 2, "Seed": 11, "GuidanceScale": 3.0, **CHEAP, "VaeType": "original", "AttentionSlicing": False},
    ),
}
TASKS = sorted({task for task, _, _ in REQUESTS.values()})


@pytest.fixture(scope="module")
def servers(model_dir: Path) -> Iterator[dict[str, ThreadedServer]]:
    started: dict[str, ThreadedServer] = {}
    try:
        for task in TASKS:
            settings = settings_for(model_dir, task, auth_token=TOKEN, max_pixels=64 * 64, max_queue_size=1, request_timeout_seconds=30)
            started[task] = ThreadedServer(create_app(settings)).__enter__()
        yield started
    finally:
        for server in started.values():
            server.__exit__(None, None, None)


def pico_post(server: ThreadedServer, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=AUTH if headers is None else headers, timeout=120)


@pytest.mark.parametrize("path", list(REQUESTS))
def test_every_pico_route_answers_picos_response(servers: dict[str, ThreadedServer], path: str) -> None:
    task, name, body = REQUESTS[path]
    r = pico_post(servers[task], path, body)
    assert r.status_code == 200, r.text
    answer = check_pico(r, name)
    assert len(answer["Images"]) == 2
    for index, layer in enumerate(answer["Images"]):
        attributes = layer["Attributes"]
        assert attributes["Index"] == index and attributes["Seed"] == 11 + index
        assert attributes["Quality"] == 2 and attributes["GuidanceScale"] == body["GuidanceScale"]
        if "Model" in attributes:
            assert attributes["Model"] == tiny_model_id(task)
            assert attributes["Phrase"] == "a red cube" and attributes["NegativePhrase"] == "blurry"
            assert attributes["Precision"] == "torch.float32"  # the runner's dtype on a CPU, as PICO writes it
        image = Image.open(io.BytesIO(base64.b64decode(layer["Image"])))
        assert image.format == "PNG"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Total": 0}, {"images": 1}),
        ({"Total": -3, "Seed": -5}, {"images": 1, "Seed": 0}),
        ({"Total": 1, "Seed": 2**40}, {"Seed": 2**32 - 1}),
        ({"Total": 1, "GuidanceScale": 50}, {"GuidanceScale": 10.0}),
        ({"Total": 1, "GuidanceScale": -1}, {"GuidanceScale": 0.0}),
        ({"Total": 1, "Quality": 0}, {"Quality": 1}),
        ({"Total": 1, "Quality": -4.0}, {"Quality": 1}),
    ],
)
def test_out_of_range_values_are_clamped_as_pico_clamps_them(servers: dict[str, ThreadedServer], change: dict[str, Any], expected: dict[str, Any]) -> None:
    r = pico_post(servers["text-to-image"], "/api/v1/stable-diffusion", {**TEXT, **change})
    answer = check_pico(r, "StableDiffusion")
    assert len(answer["Images"]) == expected.pop("images", 1)
    attributes = answer["Images"][0]["Attributes"]
    for key, value in expected.items():
        assert attributes[key] == value, attributes


def test_strength_is_clamped_and_reported(servers: dict[str, ThreadedServer]) -> None:
    _, name, body = REQUESTS["/api/v1/stable-diffusion-image-to-image"]
    answer = check_pico(pico_post(servers["image-to-image"], "/api/v1/stable-diffusion-image-to-image", {**body, "Total": 1, "Strength": 7}), name)
    assert answer["Images"][0]["Attributes"]["Strength"] == 1.0


def test_quality_is_picos_step_count() -> None:
    assert [steps_of(q) for q in (0.2, 1.0, 2.0, 0.0, 0.5, 0.003)] == [50, 250, 250, 1, 125, 1]


def test_defaults_per_route_and_a_random_seed(servers: dict[str, ThreadedServer]) -> None:
    minimal = {"Phrase": "a red cube", **CHEAP}
    sd = check_pico(pico_post(servers["text-to-image"], "/api/v1/stable-diffusion", minimal), "StableDiffusion")["Images"][0]["Attributes"]
    xl = check_pico(pico_post(servers["text-to-image"], "/api/v1/stable-diffusion-xl", minimal), "StableDiffusionXL")["Images"][0]["Attributes"]
    assert sd["GuidanceScale"] == 7.5 and xl["GuidanceScale"] == 5.0
    assert sd["NegativePhrase"] is None and 0 <= sd["Seed"] <= 2**32 - 1
    variation = {"ImageBase64": b64(png((32, 32))), **CHEAP}
    attributes = check_pico(pico_post(servers["image-variation"], "/api/v1/stable-diffusion-image-variation", variation), "StableDiffusionImageVariation")
    assert attributes["Images"][0]["Attributes"]["GuidanceScale"] == 3.0
    # Quality's default 0.2 is 50 steps.
    assert steps_of(0.2) == 50


def test_unknown_fields_are_ignored_as_pico_does(servers: dict[str, ThreadedServer]) -> None:
    r = pico_post(servers["text-to-image"], "/api/v1/stable-diffusion", {**TEXT, "Total": 1, "Sampler": "whatever", "Width": 4096})
    assert r.status_code == 200
    check_pico(r, "StableDiffusion")


def test_pico_error_cases(servers: dict[str, ThreadedServer]) -> None:
    t2i = servers["text-to-image"]
    missing = pico_post(t2i, "/api/v1/stable-diffusion", {"Total": 1})
    assert missing.status_code == 422
    assert check_pico(missing)["detail"][0]["loc"] == ["body", "Phrase"]

    other = pico_post(t2i, "/api/v1/stable-diffusion", {**TEXT, "Model": "runwayml/stable-diffusion-v1-5"})
    assert other.status_code == 400
    detail = check_pico(other)["detail"]
    assert "runwayml/stable-diffusion-v1-5" in detail and tiny_model_id("text-to-image") in detail

    too_many = pico_post(t2i, "/api/v1/stable-diffusion", {**TEXT, "Total": 5})  # PICO's range; this runner allows 4
    assert too_many.status_code == 400 and "at most 4" in check_pico(too_many)["detail"]

    too_fine = pico_post(t2i, "/api/v1/stable-diffusion", {**TEXT, "Quality": 1.0})  # 250 steps; this runner allows 150
    assert too_fine.status_code == 400 and "at most 150" in check_pico(too_fine)["detail"]

    unauthorized = pico_post(t2i, "/api/v1/stable-diffusion", TEXT, headers={})
    assert unauthorized.status_code == 401 and check_pico(unauthorized)["detail"]

    i2i = servers["image-to-image"]
    _, _, body = REQUESTS["/api/v1/stable-diffusion-image-to-image"]
    not_base64 = pico_post(i2i, "/api/v1/stable-diffusion-image-to-image", {**body, "ImageBase64": "data:image/png;base64,AAAA"})
    assert not_base64.status_code == 400 and "base64" in check_pico(not_base64)["detail"]
    not_image = pico_post(i2i, "/api/v1/stable-diffusion-image-to-image", {**body, "ImageBase64": b64(b"not an image at all")})
    assert not_image.status_code == 400 and check_pico(not_image)["detail"]
    no_image = pico_post(i2i, "/api/v1/stable-diffusion-image-to-image", {"Phrase": "x"})
    assert no_image.status_code == 422 and check_pico(no_image)["detail"][0]["loc"] == ["body", "ImageBase64"]


def test_routes_of_tasks_not_served_are_404(servers: dict[str, ThreadedServer]) -> None:
    for task, server in servers.items():
        for path, (route_task, _, body) in REQUESTS.items():
            if route_task != task:
                assert pico_post(server, path, body).status_code == 404, (task, path)


def test_gpu_busy_and_health(servers: dict[str, ThreadedServer]) -> None:
    server = servers["text-to-image"]
    health = httpx.get(server.url + "/api/v1/health")
    assert health.json() == {"Status": "Idle"}
    import jsonschema

    jsonschema.validate(health.json(), PICO_HEALTH_SCHEMA)
    body = {**TEXT, "Total": 1}
    with gated(server.app) as gate, ThreadPoolExecutor(2) as pool:
        running = pool.submit(pico_post, server, "/api/v1/stable-diffusion", body)
        gate.wait_entered()
        assert httpx.get(server.url + "/api/v1/health").json() == {"Status": "Busy"}
        queued = pool.submit(pico_post, server, "/api/v1/stable-diffusion", body)
        wait_until(lambda: server.app.state.context.worker.depth == 1, what="a queued request")
        busy = pico_post(server, "/api/v1/stable-diffusion", body)
        assert busy.status_code == 503 and check_pico(busy) == {"detail": "GPU_BUSY"}
        assert int(busy.headers["retry-after"]) >= 1
        gate.release.set()
        assert check_pico(running.result(), "StableDiffusion") and check_pico(queued.result(), "StableDiffusion")
    wait_until(lambda: httpx.get(server.url + "/api/v1/health").json() == {"Status": "Idle"}, what="idle again")


def test_pico_routes_are_counted_in_the_metrics(servers: dict[str, ThreadedServer]) -> None:
    server = servers["text-to-image"]
    before = httpx.get(server.url + "/metrics").text
    count = lambda text: metric(text, "kubediffusers_requests_total", route="/api/v1/stable-diffusion-2", method="POST", status="200")  # noqa: E731
    try:
        start = count(before)
    except AssertionError:
        start = 0.0
    assert pico_post(server, "/api/v1/stable-diffusion-2", {**TEXT, "Total": 1}).status_code == 200
    assert count(httpx.get(server.url + "/metrics").text) == start + 1


def test_livepeers_defaults_do_not_reach_pico_routes(model_dir: Path) -> None:
    """A runner for both families: livepeer's 576x1024 applies to its route only; PICO's generates the native size."""
    with ThreadedServer(create_app(settings_for(model_dir, compatibility="livepeer"))) as server:
        native = server.app.state.context.model.pipeline.default_size()
        answer = check_pico(pico_post(server, "/api/v1/stable-diffusion", {**TEXT, "Total": 1}), "StableDiffusion")
        image = Image.open(io.BytesIO(base64.b64decode(answer["Images"][0]["Image"])))
        assert (image.height, image.width) == native != (576, 1024)
        # PICO's errors keep PICO's shape (and status) under livepeer compatibility too.
        busy_model = pico_post(server, "/api/v1/stable-diffusion", {**TEXT, "Model": "other/model"})
        assert busy_model.status_code == 400 and isinstance(check_pico(busy_model)["detail"], str)
