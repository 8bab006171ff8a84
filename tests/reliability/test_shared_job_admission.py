"""Two real runner processes on one job directory, each receiving submissions
at the same instant: together they never keep more than ``KUBEDIFFUSERS_MAX_JOBS``
(the slot files of ``jobfiles``), and a slot freed by a DELETE through either
admits the next job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubediffusers.runner import jobfiles
from tests.reliability.procs import RunnerProcess, shared_job_replicas

pytestmark = pytest.mark.slow

MAX_JOBS = 3


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-admission")


@pytest.fixture(scope="module")
def pair(reliability_models: Path, jobs_dir: Path) -> Iterator[tuple[RunnerProcess, RunnerProcess]]:
    env = {"KUBEDIFFUSERS_MAX_JOBS": str(MAX_JOBS), "KUBEDIFFUSERS_MAX_STEPS": "1000"}
    with shared_job_replicas(reliability_models, "text-to-image", jobs_dir, env) as replicas:
        yield replicas


def test_replicas_admitting_at_once_keep_the_count_between_them(pair: tuple[RunnerProcess, RunnerProcess], jobs_dir: Path) -> None:
    a, b = pair
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def submit(runner: RunnerProcess) -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            r = client.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1000})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=submit, args=(runner,)) for runner in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    admitted = [r.json()["id"] for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code != 202]
    assert len(admitted) == MAX_JOBS, [(r.status_code, r.text[:100]) for r in answers]
    assert all(r.status_code == 503 and "unfinished jobs are already kept" in r.json()["detail"]["msg"] for r in refused)
    assert len([p for p in jobs_dir.iterdir() if p.name.startswith(jobfiles.SLOT_PREFIX)]) == MAX_JOBS
    # A cancelled job is finished: the next submission through the other replica evicts it, and takes its slot.
    first, second = admitted[0], admitted[1]
    assert httpx.delete(f"{b.url}/jobs/{first}", timeout=30).status_code == 200
    r = httpx.post(a.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1000}, timeout=30)
    assert r.status_code == 202, r.text
    gone = httpx.get(f"{b.url}/jobs/{first}", timeout=10)
    assert gone.status_code == 404 and f"at most {MAX_JOBS} jobs" in gone.json()["detail"]["msg"]
    # Full again; a job cancelled then deleted (forgotten) through one replica frees its slot for the other.
    assert httpx.post(a.url + "/text-to-image?async=true", json={"prompt": "x"}, timeout=30).status_code == 503
    assert httpx.delete(f"{a.url}/jobs/{second}", timeout=30).status_code == 200
    assert httpx.delete(f"{a.url}/jobs/{second}", timeout=30).status_code == 204
    assert len([p for p in jobs_dir.iterdir() if p.name.startswith(jobfiles.SLOT_PREFIX)]) == MAX_JOBS - 1
    last = httpx.post(b.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1000}, timeout=30)
    assert last.status_code == 202, last.text
    for job_id in (admitted[2], r.json()["id"], last.json()["id"]):
        httpx.delete(f"{a.url}/jobs/{job_id}", timeout=30)
