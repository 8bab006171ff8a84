"""What the video family tests share: posting video requests and reading them back."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tests.runner.helpers import png

FAST = {"num_inference_steps": 1, "seed": 9}


def t2v(client: TestClient, headers: dict[str, str] | None = None, query: str = "", **body: Any):  # type: ignore[no-untyped-def]
    payload = {"prompt": "a boat on a lake", **FAST, **body}
    return client.post("/text-to-video" + query, json=payload, headers=headers or {})


def i2v(client: TestClient, image: bytes | None = None, headers: dict[str, str] | None = None, **data: Any):  # type: ignore[no-untyped-def]
    form = {"prompt": "the boat sails away", **{k: str(v) for k, v in FAST.items()}, **{k: str(v) for k, v in data.items()}}
    form = {k: v for k, v in form.items() if v != "<unset>"}
    files = {"image": ("first.png", image if image is not None else png((32, 32)), "image/png")}
    return client.post("/image-to-video", data=form, files=files, headers=headers or {})


def wait_job(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(f"/jobs/{job_id}").json()
        if state["status"] in ("done", "failed"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
