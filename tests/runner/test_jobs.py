"""Async jobs: submit with Prefer: respond-async or ?async=true, poll GET /jobs/{id}."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.app import create_app
from kubediffusers.runner.errors import InvalidInput, QueueFull
from kubediffusers.runner.jobs import JobStore
from kubediffusers.runner.worker import Job
from tests.runner.helpers import STEPS, ThreadedServer, assert_error, decode, mp4_frames, png, ready_client, settings_for

BODY = {"prompt": "a lighthouse", "num_inference_steps": STEPS, "seed": 7}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(create_app(settings_for(model_dir, max_queue_size=2)))


def poll(client: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        state = r.json()
        if until(state):
            return state
        assert time.monotonic() < deadline, f"job never reached the expected state: {state}"
        time.sleep(0.02)


def finished(state: dict[str, Any]) -> bool:
    return state["status"] in ("done", "failed")


class SlowRun:
    """Replaces the loaded pipeline's run: reports `steps` steps, then waits
    for the test to release it before running the real pipeline."""

    def __init__(self, pipeline: Any, steps: int = 3, fail: Exception | None = None) -> None:
        self.real_run = pipeline.run
        self.steps = steps
        self.fail = fail
        self.release = threading.Event()

    def __call__(self, work: Any, on_step: Callable[[int, int], None] | None = None) -> Any:
        if on_step is not None:
            on_step(1, self.steps)
        assert self.release.wait(30), "the test never released the job"
        if self.fail is not None:
            raise self.fail
        return self.real_run(work, on_step)


@contextmanager
def slow(client: TestClient, **kwargs: Any) -> Iterator[SlowRun]:
    pipeline = client.app.state.context.model.pipeline  # type: ignore[attr-defined]
    gate = SlowRun(pipeline, **kwargs)
    pipeline.run = gate
    try:
        yield gate
    finally:
        gate.release.set()
        del pipeline.run  # back to the class's method


def test_prefer_respond_async_gives_202_and_the_same_result_as_a_sync_call(client: TestClient) -> None:
    r = client.post("/text-to-image", json=BODY, headers=ASYNC)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["task"] == "text-to-image"
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert r.headers["preference-applied"] == "respond-async"
    state = poll(client, job["id"], finished)
    assert state["status"] == "done" and state["error"] is None
    assert state["step"] == state["total_steps"] == STEPS
    assert state["expires_at"] > time.time()
    sync = client.post("/text-to-image", json=BODY).json()
    assert list(state["result"]) == ["images"]
    assert [i["seed"] for i in state["result"]["images"]] == [7]
    assert decode(state["result"]["images"][0]["url"]).tobytes() == decode(sync["images"][0]["url"]).tobytes()


def test_async_query_parameter_and_raw_result(client: TestClient) -> None:
    r = client.post("/text-to-image?async=true", json=BODY)
    assert r.status_code == 202, r.text
    assert "preference-applied" not in r.headers
    job_id = r.json()["id"]
    poll(client, job_id, finished)
    raw = client.get(f"/jobs/{job_id}/result", headers={"Accept": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-seed"] == "7"
    as_json = client.get(f"/jobs/{job_id}/result")
    assert as_json.status_code == 200 and list(as_json.json()) == ["images"]


def test_bad_input_is_refused_at_submission_not_in_the_job(client: TestClient) -> None:
    assert_error(client.post("/text-to-image", json={"prompt": ""}, headers=ASYNC), 400, "Prompt must be provided.")
    assert_error(client.post("/text-to-image", json={}, headers=ASYNC), 422, "prompt")
    assert_error(client.post("/text-to-image", json={**BODY, "num_inference_steps": 999}, headers=ASYNC), 400, "at most")
    assert_error(client.post("/text-to-image?async=maybe", json=BODY), 422, "async")


def test_running_job_reports_step_i_of_n_and_queued_jobs_wait(client: TestClient) -> None:
    with slow(client, steps=3) as gate:
        first = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        running = poll(client, first, lambda s: s["status"] == "running" and s["step"] == 1)
        assert running["total_steps"] == 3 and running["result"] is None
        second = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        queued = client.get(f"/jobs/{second}").json()
        assert queued["status"] == "queued" and queued["step"] == 0 and queued["total_steps"] is None
        early = client.get(f"/jobs/{first}/result")
        assert_error(early, 409, "is running (step 1 of 3)")
        gate.release.set()
        assert poll(client, first, finished)["status"] == "done"
    assert poll(client, second, finished)["status"] == "done"


def test_a_full_queue_answers_503_with_retry_after_at_submission(client: TestClient) -> None:
    with slow(client):
        first = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        poll(client, first, lambda s: s["status"] == "running")
        queued = [client.post("/text-to-image", json=BODY, headers=ASYNC) for _ in range(2)]  # max_queue_size=2
        assert [r.status_code for r in queued] == [202, 202]
        refused = client.post("/text-to-image", json=BODY, headers=ASYNC)
        assert_error(refused, 503, "queue is full")
        assert int(refused.headers["retry-after"]) >= 1
    for r in queued:
        assert poll(client, r.json()["id"], finished)["status"] == "done"


def test_a_failed_job_reports_the_reason(client: TestClient) -> None:
    with slow(client, fail=InvalidInput("the prompt made the model unhappy")) as gate:
        job_id = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        gate.release.set()
        state = poll(client, job_id, finished)
    assert state["status"] == "failed" and state["result"] is None
    assert state["error"] == {"msg": "the prompt made the model unhappy", "status_code": 400}
    assert_error(client.get(f"/jobs/{job_id}/result"), 400, "unhappy")


def test_unknown_job_is_404(client: TestClient) -> None:
    assert_error(client.get("/jobs/no-such-job"), 404, "no job 'no-such-job'")
    assert_error(client.get("/jobs/no-such-job/result"), 404, "no job")


def test_async_jobs_outlive_the_request_timeout(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(request_timeout_seconds=0.3)
    with slow(client) as gate:
        job_id = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        time.sleep(0.6)  # a synchronous request would have had its 504 by now
        assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
        gate.release.set()
        assert poll(client, job_id, finished)["status"] == "done"


def test_finished_jobs_are_forgotten_after_the_ttl(make_client) -> None:  # type: ignore[no-untyped-def]
    # Long enough that polling sees the job done before it expires, even on a busy machine.
    client = make_client(job_ttl_seconds=1.0)
    job_id = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
    assert poll(client, job_id, finished)["status"] == "done"
    time.sleep(1.1)
    assert_error(client.get(f"/jobs/{job_id}"), 404, "forgotten")


def test_jobs_need_the_token_too(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(auth_token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    assert_error(client.post("/text-to-image", json=BODY, headers=ASYNC), 401, "Bearer")
    job_id = client.post("/text-to-image", json=BODY, headers={**ASYNC, **auth}).json()["id"]
    assert_error(client.get(f"/jobs/{job_id}"), 401, "Bearer")
    assert poll_with(client, job_id, auth)["status"] == "done"


def poll_with(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = client.get(f"/jobs/{job_id}", headers=headers).json()
        if finished(state):
            return state
        time.sleep(0.02)
    raise AssertionError("job did not finish")


def test_every_task_accepts_async_submission(make_client) -> None:  # type: ignore[no-untyped-def]
    image = {"image": ("in.png", png((32, 32)), "image/png")}
    cases = {
        "image-to-image": ({"prompt": "x", "strength": "1", "num_inference_steps": "1"}, image),
        "inpainting": ({"prompt": "x", "num_inference_steps": "1"}, {**image, "mask_image": ("m.png", png((32, 32), 255, "L"), "image/png")}),
        "upscale": ({"prompt": "x", "num_inference_steps": "1"}, {"image": ("in.png", png((16, 16)), "image/png")}),
        "image-variation": ({"num_inference_steps": "1"}, image),
        "image-to-video": ({"num_inference_steps": "1", "num_frames": "2"}, image),
    }
    for task, (data, files) in cases.items():
        client = make_client(task)
        r = client.post(f"/{task}?async=1", data=data, files=files)
        assert r.status_code == 202, (task, r.text)
        state = poll(client, r.json()["id"], finished)
        assert state["status"] == "done", (task, state)
        key = "frames" if task == "image-to-video" else "images"
        assert list(state["result"]) == [key]


def test_async_video_over_a_real_socket_then_the_mp4(model_dir: Path) -> None:
    with ThreadedServer(create_app(settings_for(model_dir, "image-to-video"))) as server:
        r = httpx.post(
            server.url + "/image-to-video",
            data={"num_inference_steps": "2", "num_frames": "3", "seed": "5"},
            files={"image": ("first.png", png((32, 32)), "image/png")},
            headers=ASYNC,
        )
        assert r.status_code == 202, r.text
        location = server.url + r.headers["location"]
        deadline = time.monotonic() + 30
        while (state := httpx.get(location).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["status"] == "done" and state["step"] == state["total_steps"] == 2
        assert len(state["result"]["frames"][0]) == 3
        video = httpx.get(location + "/result", headers={"Accept": "video/mp4"})
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    frames, _ = mp4_frames(video.content)
    assert len(frames) == 3


# -- the store alone, with a fake clock -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def finished_job(store: JobStore, result: Any = "ok") -> str:
    job: Job[Any] = Job(work=None, execute=lambda works, on_step: [result])
    job.future.set_result(result)
    record = store.add(job, "text-to-image", lambda r: {"result": r})
    assert record.waiter is not None
    await record.waiter
    return record.id


async def test_store_expires_finished_jobs_after_the_ttl() -> None:
    clock = Clock()
    store = JobStore(ttl_seconds=10, max_jobs=5, clock=clock)
    job_id = await finished_job(store)
    assert store.get(job_id) is not None and store.get(job_id).status == "done"  # type: ignore[union-attr]
    clock.now = 10.5
    assert store.get(job_id) is None


async def test_store_evicts_the_oldest_finished_job_when_full_and_never_an_unfinished_one() -> None:
    store = JobStore(ttl_seconds=100, max_jobs=2, clock=Clock())
    oldest = await finished_job(store)
    newer = await finished_job(store)
    store.make_room()
    assert store.get(oldest) is None and store.get(newer) is not None
    first = store.add(Job(work=None, execute=lambda works, on_step: [None]), "text-to-image", lambda r: {})
    store.make_room()  # evicts `newer`, the only finished one
    second = store.add(Job(work=None, execute=lambda works, on_step: [None]), "text-to-image", lambda r: {})
    with pytest.raises(QueueFull):
        store.make_room()  # two unfinished jobs: nothing may be dropped
    assert len(store) == 2 and store.get(newer) is None
    for record in (first, second):
        assert record.status == "queued" and record.waiter is not None
        record.waiter.cancel()


def test_delete_cancels_running_and_queued_jobs_and_forgets_finished_ones(client: TestClient) -> None:
    with slow(client) as gate:
        running = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        poll(client, running, lambda s: s["status"] == "running")
        queued = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        for job_id in (queued, running):
            r = client.delete(f"/jobs/{job_id}")
            assert r.status_code == 200, r.text
            state = r.json()
            assert state["status"] == "failed" and state["error"]["status_code"] == 410
            assert "cancelled by DELETE" in state["error"]["msg"]
        gate.release.set()
        # The worker stops the running job and skips the queued one: the next job runs normally.
        later = client.post("/text-to-image", json=BODY, headers=ASYNC).json()["id"]
        assert poll(client, later, finished)["status"] == "done"
    assert client.get(f"/jobs/{running}").json()["status"] == "failed"  # cancelled stays cancelled
    assert_error(client.get(f"/jobs/{queued}/result"), 410, "cancelled")
    assert client.delete(f"/jobs/{later}").status_code == 204
    assert_error(client.get(f"/jobs/{later}"), 404, "deleted with DELETE")
    assert_error(client.delete(f"/jobs/{later}"), 404, "deleted with DELETE")
