"""Kept results, cancelled and abandoned work, and upload decoding, against real
runner processes (issue 12, points 7 and 11)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.reliability.procs import RunnerProcess
from tests.runner.helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jobs_runner(reliability_models: Path) -> Iterator[RunnerProcess]:
    env = {"KUBEDIFFUSERS_MAX_STEPS": "1000", "KUBEDIFFUSERS_MAX_QUEUE_SIZE": "2", "KUBEDIFFUSERS_MAX_JOBS": "4", "KUBEDIFFUSERS_MAX_JOB_BYTES": str(64 * 1024)}
    with RunnerProcess(reliability_models, "text-to-image", env=env) as runner:
        yield runner


def submit(runner: RunnerProcess, steps: int = 1, seed: int = 1) -> httpx.Response:
    return httpx.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": steps, "seed": seed}, timeout=30)


def state(runner: RunnerProcess, job_id: str) -> httpx.Response:
    return httpx.get(f"{runner.url}/jobs/{job_id}", timeout=10)


def idle(runner: RunnerProcess) -> bool:
    health = httpx.get(runner.url + "/health", timeout=5).json()
    return health["activity"] == "Idle" and health["queue_depth"] == 0


def done(runner: RunnerProcess, job_id: str) -> None:
    wait_until(lambda: state(runner, job_id).json()["status"] in ("done", "failed"), timeout=120, what=f"job {job_id} finished")


def test_a_kept_result_is_one_form_and_raw_png_is_that_form(jobs_runner: RunnerProcess) -> None:
    job_id = submit(jobs_runner).json()["id"]
    done(jobs_runner, job_id)
    body = httpx.get(f"{jobs_runner.url}/jobs/{job_id}/result").json()
    raw = httpx.get(f"{jobs_runner.url}/jobs/{job_id}/result", headers={"Accept": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.content == base64.b64decode(body["images"][0]["url"].split(",", 1)[1])  # the same bytes, not re-encoded
    assert raw.headers["x-seed"] == "1"


def test_kept_results_are_bounded_by_bytes_and_the_404_says_so(jobs_runner: RunnerProcess) -> None:
    # Each 64x64 result is some kB of data URL; 64 KiB holds only a few.
    ids = []
    for seed in range(4):
        ids.append(submit(jobs_runner, seed=seed).json()["id"])
        done(jobs_runner, ids[-1])
    gone = [job_id for job_id in ids if state(jobs_runner, job_id).status_code == 404]
    kept = [job_id for job_id in ids if job_id not in gone]
    assert kept and kept[-1] == ids[-1]
    if gone:
        assert "bytes of job results" in state(jobs_runner, gone[0]).json()["detail"]["msg"]
    # Past the count (4 kept at most), the oldest finished go, and their 404 says it was the count or the bytes.
    for seed in range(10, 16):
        last = submit(jobs_runner, seed=seed).json()["id"]
        done(jobs_runner, last)
    msg = state(jobs_runner, ids[0]).json()["detail"]["msg"]
    assert "was forgotten" in msg and ("at most 4 jobs" in msg or "bytes of job results" in msg), msg
    deleted = submit(jobs_runner, seed=99).json()["id"]
    done(jobs_runner, deleted)
    assert httpx.delete(f"{jobs_runner.url}/jobs/{deleted}").status_code == 204
    assert "deleted" in state(jobs_runner, deleted).json()["detail"]["msg"]


def test_cancelled_queued_jobs_free_their_slots_at_once(jobs_runner: RunnerProcess) -> None:
    running = submit(jobs_runner, steps=1000).json()["id"]
    wait_until(lambda: state(jobs_runner, running).json()["status"] == "running", timeout=60, what="the long job running")
    queued = [submit(jobs_runner, seed=s).json()["id"] for s in (1, 2)]
    full = submit(jobs_runner)
    assert full.status_code == 503, full.text
    for job_id in queued:
        assert httpx.delete(f"{jobs_runner.url}/jobs/{job_id}").status_code == 200
    again = submit(jobs_runner, seed=3)
    assert again.status_code == 202, again.text  # no wait for the running job to end
    assert httpx.delete(f"{jobs_runner.url}/jobs/{again.json()['id']}").status_code == 200
    assert httpx.delete(f"{jobs_runner.url}/jobs/{running}").status_code == 200
    wait_until(lambda: idle(jobs_runner), timeout=60, what="the worker idle")


def test_a_client_leaving_during_its_generation_stops_it(jobs_runner: RunnerProcess) -> None:
    wait_until(lambda: idle(jobs_runner), timeout=60, what="the worker idle")

    def leave_early() -> None:
        try:
            httpx.post(jobs_runner.url + "/text-to-image", json={"prompt": "x", "num_inference_steps": 1000}, timeout=2)
        except httpx.TimeoutException:
            pass

    thread = threading.Thread(target=leave_early)
    thread.start()
    wait_until(lambda: not idle(jobs_runner), timeout=30, what="the generation running")
    thread.join()
    left = time.monotonic()
    # 1000 steps take far longer; the worker notices the disconnect within a second or so.
    wait_until(lambda: idle(jobs_runner), timeout=30, what="the abandoned generation stopped")
    assert time.monotonic() - left < 15


# -- uploads -------------------------------------------------------------------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_empty_chunks(count: int) -> bytes:
    """An 8x8 PNG with ``count`` empty ancillary chunks before its pixels: cheap to send, slow to decode."""
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    raw = b"".join(b"\0" + b"\x80" * 24 for _ in range(8))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"teSt", b"") * count + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def mpo_bytes() -> bytes:
    buf = io.BytesIO()
    first, second = Image.new("RGB", (64, 64), (200, 0, 0)), Image.new("RGB", (64, 64), (0, 200, 0))
    first.save(buf, "MPO", save_all=True, append_images=[second])
    return buf.getvalue()


@pytest.fixture(scope="module")
def upload_runner(reliability_models: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(reliability_models, "image-to-image", env={"KUBEDIFFUSERS_MAX_UPLOAD_BYTES": str(16 * 1024 * 1024)}) as runner:
        yield runner


def test_decoding_does_not_block_the_event_loop(upload_runner: RunnerProcess) -> None:
    slow = png_with_empty_chunks(1_200_000)  # 14 MB
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(
            httpx.post(
                upload_runner.url + "/image-to-image",
                data={"prompt": "x", "num_inference_steps": "2"},
                files={"image": ("a.png", slow, "image/png")},
                timeout=120,
            )
        )

    thread = threading.Thread(target=send)
    thread.start()
    worst = 0.0
    while thread.is_alive():
        started = time.monotonic()
        assert httpx.get(upload_runner.url + "/healthz", timeout=10).status_code == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.05)
    thread.join()
    assert answers and answers[0].status_code in (200, 400), answers[0].text[:300]
    assert worst < 1.0, f"/healthz waited {worst:.2f}s while an upload was decoded"


def test_multi_picture_jpegs_are_accepted(upload_runner: RunnerProcess) -> None:
    r = httpx.post(
        upload_runner.url + "/image-to-image",
        data={"prompt": "x", "num_inference_steps": "2"},
        files={"image": ("phone.jpg", mpo_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:300]
