"""The async job store's bounds (issue 12, point 7): one kept form, a byte bound
beside the count, the 404's reason, and an mp4 made once per job."""

from __future__ import annotations

from typing import Any

from kubediffusers.runner.jobs import JobStore
from kubediffusers.runner.worker import Job


async def finished(store: JobStore, size: int) -> str:
    job: Job[Any] = Job(work={"image": "input"}, execute=lambda works, on_step: [None])
    job.future.set_result(["raw images"])
    record = store.add(job, "text-to-image", lambda r: {"images": [{"url": "x" * size}]})
    assert record.waiter is not None
    await record.waiter
    return record.id


async def test_only_the_body_is_kept_not_the_inputs_or_raw_outputs() -> None:
    store = JobStore(ttl_seconds=100, max_jobs=10)
    record = store.get(await finished(store, 100))
    assert record is not None and record.body == {"images": [{"url": "x" * 100}]}
    assert record.job.work is None and record.job.future.result() is None  # the PIL images are let go
    assert record.size == 100 and store.bytes_held == 100


async def test_results_past_the_byte_bound_evict_the_oldest_finished_and_say_so() -> None:
    store = JobStore(ttl_seconds=100, max_jobs=10, max_bytes=250)
    first, second, third = [await finished(store, 100) for _ in range(3)]
    assert store.get(first) is None and store.get(second) is not None and store.get(third) is not None
    assert "at most 250 bytes" in (store.forgotten(first) or "")
    huge = await finished(store, 1000)  # alone over the bound: it is kept, everything older goes
    assert store.get(huge) is not None and store.get(second) is None and store.get(third) is None


async def test_the_reason_names_the_count_the_age_or_the_delete() -> None:
    now = [0.0]
    store = JobStore(ttl_seconds=10, max_jobs=1, clock=lambda: now[0])
    counted = await finished(store, 1)
    store.make_room()
    assert "at most 1 jobs" in (store.forgotten(counted) or "")
    aged = await finished(store, 1)
    now[0] = 11
    assert store.get(aged) is None and "expired" in (store.forgotten(aged) or "")
    deleted = await finished(store, 1)
    record = store.get(deleted)
    assert record is not None
    store.forget(record)
    assert "DELETE" in (store.forgotten(deleted) or "")
    assert store.forgotten("never-seen") is None


def test_an_mp4_result_is_encoded_once_from_the_kept_frames(model_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    import httpx

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.routes import delivery
    from tests.runner.helpers import ThreadedServer, mp4_frames, png, settings_for

    calls: list[int] = []
    real = delivery.encode_mp4

    def counting(frames: list[Any], fps: int) -> bytes:
        calls.append(fps)
        return real(frames, fps)

    monkeypatch.setattr(delivery, "encode_mp4", counting)
    with ThreadedServer(create_app(settings_for(model_dir, "image-to-video"))) as server:
        data = {"num_inference_steps": "1", "num_frames": "3", "fps": "9", "seed": "5"}
        r = httpx.post(server.url + "/image-to-video?async=true", data=data, files={"image": ("a.png", png((32, 32)), "image/png")})
        assert r.status_code == 202, r.text
        location = server.url + r.headers["location"]
        deadline = time.monotonic() + 60
        while httpx.get(location).json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first, second = (httpx.get(location + "/result", headers={"Accept": "video/mp4"}) for _ in range(2))
        assert httpx.get(location + "/result").json()["frames"]  # JSON still answers from the body
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert calls == [9]  # once, at the request's fps
    frames, fps = mp4_frames(first.content)
    assert len(frames) == 3 and round(fps) == 9
