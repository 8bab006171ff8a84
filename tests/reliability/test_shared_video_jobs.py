"""A shared video job's mp4 is encoded once (issue 12 point 11, with issue 17
point 6): two real runner processes on one job directory, the first GET through
either makes the mp4 and keeps it beside the job; every later GET, through
either replica, serves those stored bytes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.procs import RunnerProcess, shared_job_replicas
from tests.runner.helpers import mp4_frames, png, wait_until

pytestmark = pytest.mark.slow

MP4 = {"Accept": "video/mp4"}


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-video-jobs")


@pytest.fixture(scope="module")
def pair(reliability_models: Path, jobs_dir: Path) -> Iterator[tuple[RunnerProcess, RunnerProcess]]:
    with shared_job_replicas(reliability_models, "image-to-video", jobs_dir) as replicas:
        yield replicas


def submit(runner: RunnerProcess) -> str:
    data = {"num_inference_steps": "1", "num_frames": "2", "seed": "7", "fps": "5"}
    r = httpx.post(runner.url + "/image-to-video?async=true", data=data, files={"image": ("a.png", png((32, 32)), "image/png")}, timeout=60)
    assert r.status_code == 202, r.text
    job_id = str(r.json()["id"])
    wait_until(lambda: httpx.get(f"{runner.url}/jobs/{job_id}", timeout=10).json()["status"] == "done", timeout=120, what="the video job done")
    return job_id


def test_the_mp4_is_encoded_once_and_served_as_stored_through_either_replica(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path) -> None:
    a, b = pair
    job_id = submit(a)
    kept = jobs_dir / f"{job_id}.mp4"
    assert not kept.exists()  # made on demand, not for jobs nobody asks an mp4 of
    first = httpx.get(f"{b.url}/jobs/{job_id}/result", headers=MP4, timeout=60)  # the replica that never saw the request
    assert first.status_code == 200 and first.headers["content-type"] == "video/mp4", first.text[:300]
    frames, fps = mp4_frames(first.content)
    assert len(frames) == 2 and round(fps) == 5
    assert kept.read_bytes() == first.content and oct(kept.stat().st_mode & 0o777) == oct(0o660)
    written = os.stat(kept)
    second = httpx.get(f"{a.url}/jobs/{job_id}/result", headers=MP4, timeout=60)
    assert second.content == first.content
    assert {k: second.headers[k] for k in ("x-seed", "x-nsfw", "x-frames")} == {k: first.headers[k] for k in ("x-seed", "x-nsfw", "x-frames")}
    after = os.stat(kept)
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not written again
    # The marker that cannot come from an encoder: bytes put in its place are what both replicas answer.
    marker = b"\x00\x00\x00\x18ftypmp42stored-not-encoded"
    tmp = jobs_dir / ".tmp-marker"
    tmp.write_bytes(marker)
    tmp.replace(kept)
    for runner in (a, b):
        r = httpx.get(f"{runner.url}/jobs/{job_id}/result", headers=MP4, timeout=60)
        assert r.status_code == 200 and r.content == marker and r.headers["x-frames"] == "2"
    assert httpx.get(f"{a.url}/jobs/{job_id}/result", timeout=60).json()["frames"]  # JSON still answers from the body
    assert httpx.delete(f"{a.url}/jobs/{job_id}", timeout=10).status_code == 204
    assert not kept.exists()  # it goes with its job
    assert httpx.get(f"{b.url}/jobs/{job_id}/result", headers=MP4, timeout=10).status_code == 404
