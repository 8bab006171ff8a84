"""Two real runner processes sharing one job directory (issue 17, point 6): a job
submitted to one is polled, fetched, cancelled and deleted through the other,
as behind a Service that load-balances between two replicas on one RWX claim."""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubediffusers.runner import jobfiles
from tests.reliability.procs import RunnerProcess, shared_job_replicas
from tests.runner.helpers import wait_until

pytestmark = pytest.mark.slow

TTL = 8.0
# jobfiles.STALE_SECONDS in these two replicas: 30 s in production, 10 s here (five heartbeats of
# HEARTBEAT_SECONDS, so a live owner on a loaded machine is still never taken for dead) to keep the
# killed-owner test from idling 30 s. The replicas run the real entry point, with that one constant set.
STALE = 10.0
SHORT_STALE_RUNNER = [
    sys.executable,
    "-c",
    f"import sys; from kubediffusers.runner import jobfiles; jobfiles.STALE_SECONDS = {STALE}; from kubediffusers.runner.cli import serve; sys.exit(serve())",
]


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-jobs")


@pytest.fixture(scope="module")
def pair(reliability_models: Path, jobs_dir: Path) -> Iterator[tuple[RunnerProcess, RunnerProcess]]:
    env = {"KUBEDIFFUSERS_JOB_TTL_SECONDS": str(TTL), "KUBEDIFFUSERS_MAX_STEPS": "1000"}
    with shared_job_replicas(reliability_models, "text-to-image", jobs_dir, env, command=SHORT_STALE_RUNNER) as replicas:
        yield replicas


def submit(runner: RunnerProcess, steps: int = 1, seed: int = 1) -> str:
    r = httpx.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": steps, "seed": seed}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def state(runner: RunnerProcess, job_id: str) -> httpx.Response:
    return httpx.get(f"{runner.url}/jobs/{job_id}", timeout=10)


def idle(runner: RunnerProcess) -> bool:
    health = httpx.get(runner.url + "/health", timeout=5).json()
    return health["activity"] == "Idle" and health["queue_depth"] == 0


def test_a_job_submitted_to_one_replica_is_polled_and_fetched_through_the_other(pair: tuple[RunnerProcess, RunnerProcess]) -> None:
    a, b = pair
    job_id = submit(a, seed=5)
    first = state(b, job_id)  # at once: the 202 came after the state was on disk
    assert first.status_code == 200 and first.json()["status"] in ("queued", "running", "done"), first.text
    wait_until(lambda: state(b, job_id).json()["status"] == "done", timeout=120, what="the job done, seen through the other replica")
    through_b, through_a = state(b, job_id).json(), state(a, job_id).json()
    assert through_a == through_b and through_b["result"]["images"][0]["seed"] == 5
    body = httpx.get(f"{b.url}/jobs/{job_id}/result", timeout=10).json()
    raw = httpx.get(f"{b.url}/jobs/{job_id}/result", headers={"Accept": "image/png"}, timeout=10)
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png" and raw.headers["x-seed"] == "5"
    assert raw.content == base64.b64decode(body["images"][0]["url"].split(",", 1)[1])


def test_a_job_running_on_one_replica_is_cancelled_through_the_other(pair: tuple[RunnerProcess, RunnerProcess]) -> None:
    a, b = pair
    long = submit(a, steps=1000, seed=2)
    wait_until(lambda: state(b, long).json()["step"] >= 1, timeout=120, what="the long job running, seen through the other replica")
    queued = submit(a, steps=1, seed=3)
    assert state(b, queued).json()["status"] == "queued"
    for job_id in (queued, long):
        started = time.monotonic()
        r = httpx.delete(f"{b.url}/jobs/{job_id}", timeout=30)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text  # the owner confirmed within the bound
        assert took < jobfiles.CANCEL_WAIT_SECONDS, took
        cancelled = r.json()
        assert cancelled["status"] == "failed" and cancelled["error"]["status_code"] == 410
        assert "through another replica" in cancelled["error"]["msg"]
    # The owner really stopped: its worker goes idle long before 1000 steps, and the queued job never ran.
    wait_until(lambda: idle(a), timeout=30, what="the owner idle after the cancel")
    assert state(a, long).json()["step"] < 1000
    for job_id in (queued, long):
        r = httpx.get(f"{a.url}/jobs/{job_id}/result", timeout=10)
        assert r.status_code == 410 and "cancelled" in r.json()["detail"]["msg"]


def test_finished_jobs_expire_on_every_replica_and_their_files_go(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path) -> None:
    a, b = pair
    job_id = submit(a)
    wait_until(lambda: state(b, job_id).json()["status"] == "done", timeout=120, what="the job done")
    assert {p.name for p in jobs_dir.iterdir()} >= {f"{job_id}.json", f"{job_id}.result.json"}
    time.sleep(TTL + jobfiles.SWEEP_SECONDS + 0.5)
    r = state(b, job_id)
    assert r.status_code == 404 and "expired" in r.json()["detail"]["msg"], r.text
    assert state(a, job_id).status_code == 404
    assert not [p.name for p in jobs_dir.iterdir() if p.name.startswith(job_id) and p.suffix != ".gone"]  # only why it went


def test_a_finished_job_deleted_through_one_replica_is_gone_on_both(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path) -> None:
    a, b = pair
    job_id = submit(b)
    wait_until(lambda: state(a, job_id).json()["status"] == "done", timeout=120, what="the job done")
    assert httpx.delete(f"{a.url}/jobs/{job_id}", timeout=10).status_code == 204
    for runner in (a, b):
        r = state(runner, job_id)
        assert r.status_code == 404 and "deleted with DELETE" in r.json()["detail"]["msg"]
    assert not (jobs_dir / f"{job_id}.result.json").exists()


def raw_get(runner: RunnerProcess, target: str) -> tuple[int, bytes]:
    """A request line sent as is: clients normalise dot segments away, an attacker does not."""
    with socket.create_connection(("127.0.0.1", runner.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize(
    "target",
    ["/jobs/..", "/jobs/a.b", "/jobs/.json", "/jobs/%2e%2e", "/jobs/..%2F..%2Fetc%2Fpasswd", "/jobs/a%2Fb", "/jobs/x.result", "/jobs/..%5Cx"],
)
def test_job_ids_with_dots_or_separators_are_404(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path, target: str) -> None:
    a, _ = pair
    before = sorted(p.name for p in jobs_dir.parent.iterdir())
    for suffix in ("", "/result"):
        status, data = raw_get(a, target + suffix)
        assert status == 404, data[:300]
    status, data = raw_get(a, target)
    assert b'"detail"' in data  # a JSON error, not a file's content
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        s.sendall(f"DELETE {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(64).split(b" ", 2)[1] in (b"404", b"405")
    assert sorted(p.name for p in jobs_dir.parent.iterdir()) == before


# The last two stop the first replica: they run last.


def test_a_job_left_by_a_drained_replica_reads_as_failed_on_the_other(pair: tuple[RunnerProcess, RunnerProcess]) -> None:
    a, b = pair
    long = submit(a, steps=1000)
    wait_until(lambda: state(b, long).json()["step"] >= 1, timeout=120, what="the long job running")
    a.stop()  # SIGTERM: a 1 s drain, then what is left fails, and the owner writes so before it exits
    failed = state(b, long).json()
    assert failed["status"] == "failed" and failed["error"]["status_code"] == 503 and "shut down" in failed["error"]["msg"], failed
    a.start()
    a.wait_ready()


def test_a_job_of_a_killed_replica_reads_as_failed_on_the_other(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path) -> None:
    a, b = pair
    assert jobfiles.STALE_SECONDS > STALE  # the shortened constant is this test's, not the runner's default
    long = submit(a, steps=1000)
    wait_until(lambda: state(b, long).json()["step"] >= 1, timeout=120, what="the long job running")
    assert a.proc is not None
    a.proc.kill()  # no drain, no last write: only the heartbeat's absence tells
    a.proc.wait(10)
    last_update = json.loads((jobs_dir / f"{long}.json").read_text())["updated_at"]  # the dead owner's last heartbeat
    assert state(b, long).json()["status"] == "running"
    wait_until(lambda: state(b, long).json()["status"] == "failed", timeout=STALE + 15, what="the orphaned job failed")
    assert time.time() >= last_update + STALE  # failed for its silence, not before the owner was STALE seconds quiet
    error = state(b, long).json()["error"]
    assert error["status_code"] == 503 and "stopped updating" in error["msg"]
    assert httpx.delete(f"{b.url}/jobs/{long}", timeout=10).status_code == 204  # finished now: it can be forgotten
