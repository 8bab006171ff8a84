"""Large JSON bodies are parsed and validated off the event loop, and a flood of
unknown keys is counted, not validated key by key (routes/bodies.py; issue 12,
point 4). The answers are FastAPI's, as for a small body.

The event loop's share is measured as the CPU time of the loop's own thread
while the request is handled: unlike wall-clock time it does not grow when the
machine is loaded, and it is what keeps /healthz waiting. tests/reliability
checks /healthz itself against a real runner process under the flood.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.errors import install_error_handlers
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.routes.bodies import OFF_LOOP_BYTES
from kubediffusers.runner.settings import RunnerSettings
from tests.reliability.hostile import unknown_key_flood
from tests.runner.helpers import assert_error, assert_validation_shape, decode

JSON = {"content-type": "application/json"}


def post_on_a_loop(app: FastAPI, path: str, body: bytes) -> tuple[int, Any, float]:
    """POST ``body`` through the ASGI app on a fresh event loop: (status, answer, CPU seconds of the loop's thread)."""
    messages: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "server": ("test", 80),
        "client": ("test", 1),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def call() -> float:
        started = time.thread_time()
        await app({**scope, "app": app}, receive, send)
        return time.thread_time() - started

    # A garbage collection runs on whichever thread allocates next, wherever the
    # validation ran: kept out of the measurement.
    gc.collect()
    gc.disable()
    try:
        loop_cpu = asyncio.run(call())
    finally:
        gc.enable()
    start = next(m for m in messages if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(answer), loop_cpu


def plain_fastapi_app() -> FastAPI:
    """The same request model and error handlers on FastAPI's own route class: the control."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/text-to-image")
    async def endpoint(params: TextToImageParams) -> dict[str, str]:
        return {}

    return app


def test_the_worst_body_inside_the_json_cap_leaves_the_event_loop_free() -> None:
    body, unknown = unknown_key_flood()
    assert len(body) <= 1024 * 1024 and unknown > 130_000
    app = create_app(RunnerSettings(task="text-to-image", model_id="x/y"), load_model=False)
    status, answer, loop_cpu = post_on_a_loop(app, "/text-to-image", body)
    assert status == 422
    assert_validation_shape(answer)
    items = answer["detail"]
    assert len(items) == 20 and [item["loc"] for item in items[:3]] == [["body", "a"], ["body", "b"], ["body", "c"]]
    assert items[-1] == {"loc": ["body"], "msg": f"and {unknown - 19} more errors (at most 20 are reported)", "type": "too_many_errors"}
    # FastAPI's own route does the whole job on the loop's thread; ours a small part of it.
    control_status, control, control_cpu = post_on_a_loop(plain_fastapi_app(), "/text-to-image", body)
    assert control_status == 422 and control["detail"][:19] == items[:19]  # the same errors, first to last
    assert loop_cpu < control_cpu / 4 and loop_cpu < 0.25, (loop_cpu, control_cpu)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"prompt": "x", "k": 1' + b" " * OFF_LOOP_BYTES, 422, f"body.{22 + OFF_LOOP_BYTES}: JSON decode error"),  # loc: the offset
        (b"[" * 100_000, 400, "There was an error parsing the body"),  # deeper than json's recursion limit
        (b'{"prompt": "x", "seed": ' + b"1" * 5000 + b" " * OFF_LOOP_BYTES + b"}", 400, "There was an error parsing the body"),  # Python's digit limit
        (b'{"prompt": "x", "seed": "many"' + b" " * OFF_LOOP_BYTES + b"}", 422, "body.seed: Input should be a valid integer"),
        (b'{"prompt": ""' + b" " * OFF_LOOP_BYTES + b"}", 400, "Prompt must be provided."),
        (b"[1, 2, 3]" + b" " * OFF_LOOP_BYTES, 422, "body: Input should be a valid dictionary or object"),
    ],
)
def test_large_bodies_get_the_answers_small_ones_do(body: bytes, status: int, fragment: str) -> None:
    assert len(body) > OFF_LOOP_BYTES
    app = create_app(RunnerSettings(task="text-to-image", model_id="x/y"), load_model=False)
    with TestClient(app) as client:
        assert_error(client.post("/text-to-image", content=body, headers=JSON), status, fragment)
        small = body.rstrip()  # the same body under the threshold takes FastAPI's own path
        if len(small) <= OFF_LOOP_BYTES and status == 422:
            assert (
                client.post("/text-to-image", content=small, headers=JSON).json()["detail"][0]["type"]
                == (client.post("/text-to-image", content=body, headers=JSON).json()["detail"][0]["type"])
            )


def test_a_large_valid_body_generates_what_the_compact_one_does(t2i: TestClient) -> None:
    request = {"prompt": "ein Würfel " * 300, "negative_prompt": "blurry", "num_inference_steps": 2, "seed": 3}
    padded = json.dumps(request, ensure_ascii=True, indent=OFF_LOOP_BYTES // 2).encode()  # escapes and whitespace past the threshold
    assert len(padded) > OFF_LOOP_BYTES
    large = t2i.post("/text-to-image", content=padded, headers=JSON)
    compact = t2i.post("/text-to-image", json=request)
    assert large.status_code == compact.status_code == 200, large.text
    assert decode(large.json()["images"][0]["url"]).tobytes() == decode(compact.json()["images"][0]["url"]).tobytes()


def test_picos_routes_ignore_a_flood_of_unknown_keys_as_pico_does(t2i: TestClient) -> None:
    body = {"Phrase": "a cube", "Quality": 0.004, "Seed": 5, **{f"k{i}": 0 for i in range(20_000)}}
    r = t2i.post("/api/v1/stable-diffusion", json=body)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["Images"][0]["Attributes"]["Quality"] == 1
