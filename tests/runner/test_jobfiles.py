"""The shared job directory (issue 17, point 6): whole-file writes, expiry,
bounds, stale owners and job ids that could name other paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kubediffusers.runner import jobfiles
from kubediffusers.runner.errors import QueueFull
from kubediffusers.runner.jobfiles import JobFiles, valid_id
from kubediffusers.runner.jobs import JobStore, stored_job_state
from kubediffusers.runner.worker import Job


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def state(job_id: str, finished_at: float | None, size: int = 0, status: str = "done") -> dict[str, Any]:
    return {
        "id": job_id,
        "task": "text-to-image",
        "status": status,
        "created_at": 0.0,
        "step": 1,
        "total_steps": 1,
        "error": None,
        "finished_at": finished_at,
        "size": size,
    }


def done_job(files: JobFiles, job_id: str, size: int = 10) -> None:
    files.write_result(job_id, {"images": [{"url": "x" * size}]})
    files.write_state(state(job_id, files.clock(), size=size))


def names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


@pytest.mark.parametrize("job_id", ["..", ".", "a/b", "../etc", "a.b", "a\\b", "", "x" * 65, "a b", "é", "a\x00b"])
def test_ids_that_could_name_other_paths_are_refused(tmp_path: Path, job_id: str) -> None:
    files = JobFiles(tmp_path / "jobs", 60, 10)
    assert not valid_id(job_id)
    with pytest.raises(ValueError, match="not a job id"):
        files.read(job_id)
    with pytest.raises(ValueError, match="not a job id"):
        files.request_cancel(job_id)
    assert names(tmp_path) == {"jobs"} and names(tmp_path / "jobs") == set()


def test_real_ids_are_valid() -> None:
    import secrets

    assert all(valid_id(secrets.token_urlsafe(16)) for _ in range(1000))


def test_expiry_removes_the_files_and_the_reason_expires_too(tmp_path: Path) -> None:
    clock = Clock()
    files = JobFiles(tmp_path, ttl_seconds=10, max_jobs=10, clock=clock)
    done_job(files, "old")
    files.request_cancel("old")  # a late cancel request goes with its job
    assert names(tmp_path) == {"old.json", "old.result.json", "old.cancel"}
    clock.now += 10.5
    files.sweep()
    assert names(tmp_path) == {"old.gone"}
    assert files.read("old") is None and "expired" in (files.gone("old") or "")
    clock.now += 11
    os.utime(tmp_path / "old.gone", (clock.now - 11, clock.now - 11))
    files.sweep()
    assert names(tmp_path) == set()  # no growth: the reasons go too


def test_count_and_byte_bounds_hold_for_the_directory(tmp_path: Path) -> None:
    clock = Clock()
    files = JobFiles(tmp_path, ttl_seconds=100, max_jobs=2, max_bytes=250, clock=clock)
    for job_id in ("a", "b", "c"):
        clock.now += 1
        done_job(files, job_id, size=100)
        files.sweep(keep=job_id)
    assert files.read("a") is None and "bytes" in (files.gone("a") or "")
    assert files.read("b") is not None and files.read("c") is not None
    files.make_room("x")  # two kept, at most two: the oldest finished goes
    assert files.read("b") is None and "at most 2 jobs" in (files.gone("b") or "")
    files.write_state(state("u1", None, status="running"))
    with pytest.raises(QueueFull):
        files.write_state(state("u2", None, status="queued"))
        files.make_room("y")  # two unfinished: nothing may go
    assert files.read("u1") is not None and files.read("u2") is not None


def test_a_job_whose_owner_stopped_updating_it_reads_as_failed_then_expires(tmp_path: Path) -> None:
    clock = Clock()
    files = JobFiles(tmp_path, ttl_seconds=5, max_jobs=10, clock=clock)
    files.write_state(state("orphan", None, status="running"))
    assert files.read("orphan").state["status"] == "running"  # type: ignore[union-attr]
    clock.now += jobfiles.STALE_SECONDS + 1
    stored = files.read("orphan")
    assert stored is not None and stored.finished
    view = stored_job_state(stored, 5)
    assert view.status == "failed" and view.error is not None and view.error.status_code == 503 and "stopped updating" in view.error.msg
    clock.now += 6
    files.sweep()
    assert files.read("orphan") is None and "expired" in (files.gone("orphan") or "")


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from kubediffusers.runner.jobfiles import JobFiles
    real_fsync = os.fsync
    def slow_fsync(fd):  # a slow disk: each write stays under way a while, so the kill lands in one
        time.sleep(0.05)
        real_fsync(fd)
    os.fsync = slow_fsync
    files = JobFiles(Path(sys.argv[1]), 3600, 100)
    n = 0
    print("ready", flush=True)
    while True:
        n += 1
        files.write_result("job", {"n": n, "images": [{"url": "x" * (4 * 1024 * 1024)}]})
    """
)


def test_a_result_is_never_read_half_written_even_when_the_writer_is_killed(tmp_path: Path) -> None:
    """A writer process rewrites a 4 MiB result as fast as it can; a reader in
    another process reads it meanwhile; then the writer is killed mid-write."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
        path = tmp_path / "job.result.json"
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 5 and time.monotonic() < deadline:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            body = json.loads(data)  # a half-written file would not parse
            assert len(body["images"][0]["url"]) == 4 * 1024 * 1024
            seen.add(body["n"])
        assert len(seen) >= 5, "the writer made too few versions to check"
        # Kill it while it writes: once a temporary file exists, before its rename.
        while not any(p.name.startswith(jobfiles.TMP_PREFIX) for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    assert len(json.loads(path.read_bytes())["images"][0]["url"]) == 4 * 1024 * 1024  # the last whole version
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(jobfiles.TMP_PREFIX)]
    assert leftovers, "the writer was not killed mid-write"
    clock = Clock()
    files = JobFiles(tmp_path, 3600, 100, clock=clock)
    files.sweep()
    assert all(p.exists() for p in leftovers)  # a write may still be under way: kept for a while
    clock.now += jobfiles.TMP_MAX_AGE_SECONDS + 1
    files.sweep()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(jobfiles.TMP_PREFIX)]


async def test_a_shared_store_keeps_a_finished_job_only_on_disk(tmp_path: Path) -> None:
    files = JobFiles(tmp_path, 100, 10)
    store = JobStore(100, 10, files=files)
    job: Job[Any] = Job(work={"x": 1}, execute=lambda works, on_step: [None])
    job_id = await store.admit()
    record = store.add(job, "text-to-image", lambda r: {"images": [{"url": "data"}]}, job_id=job_id)
    await store.publish(record)
    assert files.read(record.id).state["status"] == "queued"  # type: ignore[union-attr]
    assert files.read(record.id).state["slot"] == 0 and (tmp_path / f"{jobfiles.SLOT_PREFIX}0").read_text() == job_id  # type: ignore[union-attr]
    job.future.set_result(["image"])
    assert record.waiter is not None
    await record.waiter
    assert store.get(record.id) is None  # not two copies that could disagree
    stored = files.read(record.id)
    assert stored is not None and stored.state["status"] == "done" and stored.result == {"images": [{"url": "data"}]}
    assert stored.state["size"] == len(json.dumps({"images": [{"url": "data"}]}))


async def test_a_shared_owner_cancels_on_another_replicas_request(tmp_path: Path) -> None:
    import asyncio

    store = JobStore(100, 10, files=JobFiles(tmp_path, 100, 10))
    job: Job[Any] = Job(work={"x": 1}, execute=lambda works, on_step: [None])
    record = store.add(job, "text-to-image", lambda r: {})
    await store.publish(record)
    other = JobFiles(tmp_path, 100, 10)  # another replica's view of the same directory
    other.request_cancel(record.id)
    started = time.monotonic()
    while not (other.read(record.id) or jobfiles.StoredJob({})).finished:
        assert time.monotonic() - started < jobfiles.POLL_SECONDS * 4, "the owner did not notice the cancel request"
        await asyncio.sleep(0.02)
    stored = other.read(record.id)
    assert stored is not None and stored.state["error"]["status_code"] == 410 and "through another replica" in stored.state["error"]["msg"]
    assert job.cancelled is not None  # the worker skips it or stops it at its next step
    job.future.set_result([None])
    assert record.waiter is not None
    await record.waiter
    assert other.read(record.id).state["status"] == "failed"  # type: ignore[union-attr]  # the worker's late answer changes nothing


def test_a_directory_the_runner_cannot_write_stops_it_with_one_line(tmp_path: Path) -> None:
    from kubediffusers.runner.context import shared_job_files
    from kubediffusers.runner.settings import ConfigurationError
    from tests.runner.helpers import settings_for

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="KUBEDIFFUSERS_JOBS_DIR: cannot make the shared job directory"):
        shared_job_files(settings_for(tmp_path, shared_jobs=True, jobs_dir=blocker / "jobs"))
    assert shared_job_files(settings_for(tmp_path)) is None
    made = shared_job_files(settings_for(tmp_path, shared_jobs=True))
    assert made is not None and made.root == tmp_path / ".kubediffusers-jobs" and made.root.is_dir()


def test_a_video_job_made_by_one_runner_is_an_mp4_from_another(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame rate travels in the state: a replica that never saw the request encodes the mp4, once; both then serve those bytes."""
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

    shared = {"shared_jobs": True, "jobs_dir": tmp_path / "jobs"}
    with (
        ThreadedServer(create_app(settings_for(model_dir, "image-to-video", **shared))) as one,
        ThreadedServer(create_app(settings_for(model_dir, "image-to-video", **shared))) as other,
    ):
        r = httpx.post(
            one.url + "/image-to-video",
            data={"num_inference_steps": "1", "num_frames": "3", "seed": "5", "fps": "4"},
            files={"image": ("first.png", png((32, 32)), "image/png")},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        deadline = time.monotonic() + 60
        while (state := httpx.get(other.url + location).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["status"] == "done", state
        video = httpx.get(other.url + location + "/result", headers={"Accept": "video/mp4"}, timeout=30)
        again = [httpx.get(server.url + location + "/result", headers={"Accept": "video/mp4"}, timeout=30) for server in (one, other)]
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    frames, fps = mp4_frames(video.content)
    assert len(frames) == 3 and fps == 4
    assert calls == [4]  # encoded once, by the first GET; the others served the stored file
    assert [r.content for r in again] == [video.content] * 2 and all(r.headers["x-frames"] == "3" for r in again)
    job_id = location.rsplit("/", 1)[1]
    assert (tmp_path / "jobs" / f"{job_id}.mp4").read_bytes() == video.content


def test_a_kept_mp4_counts_in_the_byte_bound_and_goes_with_its_job(tmp_path: Path) -> None:
    clock = Clock()
    files = JobFiles(tmp_path, 60, 10, max_bytes=100, clock=clock)
    done_job(files, "old", size=10)
    clock.now += 1
    done_job(files, "new", size=10)
    assert files.write_derived("old", b"m" * 30) and files.read_derived("old") == b"m" * 30
    assert set(files.sweep()) == {"old", "new"}  # 10 + 10 + 30 bytes: within the bound
    assert files.write_derived("new", b"n" * 60)  # 110 bytes now: the oldest finished goes, the one just written stays
    assert set(files.sweep()) == {"new"} and files.read_derived("old") is None
    assert "old.mp4" not in names(tmp_path) and "bytes of job results" in (files.gone("old") or "")
    files.forget("new", "deleted")
    assert not {n for n in names(tmp_path) if n.startswith("new") and not n.endswith(".gone")}
    # An mp4 made for a job forgotten meanwhile is not left behind.
    assert files.write_derived("new", b"late") is False and "new.mp4" not in names(tmp_path)
    done_job(files, "expiring")
    files.write_derived("expiring", b"x")
    clock.now += 61
    files.sweep()
    assert not {n for n in names(tmp_path) if n.startswith("expiring") and not n.endswith(".gone")}
    with pytest.raises(ValueError, match="not a job id"):
        files.write_derived("../x", b"")


def test_a_cancel_nobody_confirms_answers_202_and_the_request_stays_filed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner that does not act within the bound (its pod is stuck, or just killed): 202, the state as it is, poll on."""
    from fastapi.testclient import TestClient

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.routes import jobs as job_routes
    from tests.runner.helpers import settings_for

    monkeypatch.setattr(job_routes, "CANCEL_WAIT_SECONDS", 0.3)
    app = create_app(settings_for(tmp_path, shared_jobs=True, jobs_dir=tmp_path / "jobs"), load_model=False)
    files = JobFiles(tmp_path / "jobs", 60, 10)
    files.write_state(state("elsewhere", None, status="running"))  # owned by a replica that is not listening
    files.write_state({**state("other-task", files.clock()), "task": "image-to-video"})
    files.write_result("other-task", {"frames": []})
    with TestClient(app) as client:
        r = client.delete("/jobs/elsewhere")
        assert r.status_code == 202 and r.json()["status"] == "running", r.text
        assert files.cancel_requested("elsewhere")
        # Another pipeline's job in the same directory is not this runner's to answer.
        assert client.get("/jobs/other-task").status_code == 404
        assert client.delete("/jobs/other-task").status_code == 404
    assert files.read("other-task") is not None


def test_a_failing_shared_directory_answers_503_not_an_internal_error(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from kubediffusers.runner.app import create_app
    from tests.runner.helpers import assert_error, ready_client, settings_for

    jobs = tmp_path / "jobs"
    for client in ready_client(create_app(settings_for(model_dir, shared_jobs=True, jobs_dir=jobs))):
        shutil.rmtree(jobs)
        jobs.write_text("")  # the directory is gone and a file is in its place: every access fails
        refused = client.post("/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1})
        assert_error(refused, 503, "shared job directory could not be read or written")
        assert refused.headers["retry-after"] == "5"
        assert_error(client.get("/jobs/abc"), 503, "shared job directory")
        assert client.get("/health").json()["queue_depth"] == 0  # nothing was queued for nobody


def _admit_at_once(root: str, job_id: str, barrier: Any, results: Any) -> None:
    files = JobFiles(Path(root), 3600, 3)
    barrier.wait()
    try:
        slot = files.make_room(job_id)
    except QueueFull:
        results.put((job_id, None))
        return
    files.write_state({**state(job_id, None, status="queued"), "slot": slot})
    results.put((job_id, slot))


def test_replicas_admitting_at_the_same_instant_never_pass_the_count(tmp_path: Path) -> None:
    """Eight processes, released by one barrier, each admitting a job into a directory that holds three:
    exactly three get in, each with its own slot, whatever the timing."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        root = tmp_path / f"round-{round_}"
        JobFiles(root, 3600, 3)
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_admit_at_once, args=(str(root), f"job{round_}x{i}", barrier, results)) for i in range(8)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        admitted = {job_id: slot for job_id, slot in outcomes if slot is not None}
        assert sorted(admitted.values()) == [0, 1, 2], outcomes
        assert {n for n in names(root) if n.endswith(".json")} == {f"{job_id}.json" for job_id in admitted}
        for job_id, slot in admitted.items():
            assert (root / f"{jobfiles.SLOT_PREFIX}{slot}").read_text() == job_id


def test_a_slot_is_freed_with_its_job_or_after_its_admitter_died(tmp_path: Path) -> None:
    clock = Clock()
    files = JobFiles(tmp_path, 60, 2, clock=clock)
    slot_path = tmp_path.joinpath
    assert files.make_room("a") == 0
    files.write_result("a", {"images": []})
    files.write_state({**state("a", clock()), "slot": 0})  # finished
    assert files.make_room("b") == 1  # admitted; its replica dies before it writes a state
    # One job in the directory, but both slots held: the finished one goes, and its slot with it.
    assert files.make_room("c") == 0
    assert "at most 2 jobs" in (files.gone("a") or "") and slot_path(f"{jobfiles.SLOT_PREFIX}0").read_text() == "c"
    files.write_state({**state("c", None, status="queued"), "slot": 0})
    with pytest.raises(QueueFull):  # "b" may just be slow: its slot is held for the grace
        files.make_room("d")
    clock.now += jobfiles.SLOT_GRACE_SECONDS + 1
    files.write_state({**state("c", None, status="running"), "slot": 0})  # "c" is alive: its owner heartbeats
    assert files.make_room("d") == 1  # past the grace, a sweep freed the slot "b" never used
    files.release_slot("someone-else", 1)  # only its holder frees a slot
    assert slot_path(f"{jobfiles.SLOT_PREFIX}1").read_text() == "d"
    files.release_slot("d", 1)
    assert not slot_path(f"{jobfiles.SLOT_PREFIX}1").exists()
    files.forget("c", "deleted")
    assert not slot_path(f"{jobfiles.SLOT_PREFIX}0").exists()


def test_a_job_the_worker_refuses_gives_its_slot_back(model_dir: Path, tmp_path: Path) -> None:
    """Admitted against the directory, then refused by a full worker queue: 503, and no slot left held."""
    from kubediffusers.runner.app import create_app
    from tests.runner.helpers import ready_client, settings_for

    jobs = tmp_path / "jobs"
    for client in ready_client(create_app(settings_for(model_dir, shared_jobs=True, jobs_dir=jobs, max_queue_size=1, max_jobs=20))):
        codes = [client.post("/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 50}).status_code for _ in range(8)]
        assert 503 in codes, codes
        admitted = codes.count(202)
        slots = sorted(n for n in names(jobs) if n.startswith(jobfiles.SLOT_PREFIX))
        assert len(slots) == admitted  # each queued job holds one; the refused ones gave theirs back
        states = [json.loads((jobs / n).read_text()) for n in names(jobs) if n.endswith(".json") and not n.endswith(".result.json")]
        assert sorted(s["slot"] for s in states) == sorted(int(n.removeprefix(jobfiles.SLOT_PREFIX)) for n in slots)
        for s in states:
            client.delete(f"/jobs/{s['id']}")
