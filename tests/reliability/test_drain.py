"""The drain on SIGTERM, against real runner processes (issue 12, point 6): the
runner turns unready at once, refuses new work with 503 and Retry-After,
finishes what is running and queued (sync and async) within its deadline,
fails what is left with a clear error, and exits; slow readers do not hold it."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.procs import RunnerProcess
from tests.runner.helpers import wait_until

pytestmark = pytest.mark.slow


def busy(runner: RunnerProcess) -> bool:
    return httpx.get(runner.url + "/health", timeout=5).json()["activity"] == "Busy"


def post_in_thread(runner: RunnerProcess, steps: int, results: list[httpx.Response]) -> threading.Thread:
    def run() -> None:
        body = {"prompt": "a lighthouse", "num_inference_steps": steps, "seed": 1}
        results.append(httpx.post(runner.url + "/text-to-image", json=body, timeout=300))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def exit_code(runner: RunnerProcess, timeout: float) -> int:
    assert runner.proc is not None
    return runner.proc.wait(timeout)


def test_sigterm_finishes_running_and_queued_work_then_exits(reliability_models: Path) -> None:
    env = {"KUBEDIFFUSERS_MAX_STEPS": "400", "KUBEDIFFUSERS_DRAIN_SECONDS": "240", "KUBEDIFFUSERS_LOG_LEVEL": "info"}
    runner = RunnerProcess(reliability_models, "text-to-image", env=env)
    with runner:
        job = httpx.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 60, "seed": 2}, timeout=30)
        assert job.status_code == 202, job.text
        job_url = runner.url + job.headers["location"]
        results: list[httpx.Response] = []
        threads = [post_in_thread(runner, 60, results) for _ in range(2)]
        wait_until(lambda: busy(runner), timeout=60, what="a generation running")
        wait_until(lambda: httpx.get(runner.url + "/health").json()["queue_depth"] == 2, timeout=30, what="two requests queued")
        runner.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        time.sleep(0.3)

        ready = httpx.get(runner.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["detail"]["status"] == "DRAINING", ready.text
        refused = httpx.post(runner.url + "/text-to-image", json={"prompt": "x", "num_inference_steps": 1}, timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert "shutting down" in refused.json()["detail"]["msg"]
        refused_job = httpx.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1}, timeout=30)
        assert refused_job.status_code == 503, refused_job.text
        assert httpx.get(runner.url + "/healthz", timeout=5).status_code == 200  # alive while draining

        # The async job (first in line) finishes and can still be read while the rest drains.
        wait_until(lambda: httpx.get(job_url, timeout=5).json()["status"] == "done", timeout=120, what="the async job done")
        for thread in threads:
            thread.join(240)
        assert [r.status_code for r in results] == [200, 200], [r.text[:200] for r in results]
        started = time.monotonic()
        assert exit_code(runner, 60) == 0, runner.output()[-2000:]
        assert time.monotonic() - started < 30
    assert "drained in" in runner.output()


def test_work_left_at_the_drain_deadline_fails_clearly_and_slow_readers_do_not_hold_the_exit(reliability_models: Path) -> None:
    env = {
        "KUBEDIFFUSERS_MAX_STEPS": "1000",
        "KUBEDIFFUSERS_DRAIN_SECONDS": "2",
        "KUBEDIFFUSERS_WRITE_TIMEOUT_SECONDS": "3",
        "KUBEDIFFUSERS_LOG_LEVEL": "info",
    }
    runner = RunnerProcess(reliability_models, "text-to-image", env=env)
    with runner:
        results: list[httpx.Response] = []
        threads = [post_in_thread(runner, 1000, results) for _ in range(2)]
        # Both in before the signal, one running and one queued: a request that arrived after it would
        # be refused as "shutting down" instead (a loaded machine starts the second thread late).
        wait_until(lambda: busy(runner) and httpx.get(runner.url + "/health").json()["queue_depth"] == 1, timeout=60, what="one running, one queued")
        # A client that never reads its answers, holding the server's write buffer.
        reader = socket.create_connection(("127.0.0.1", runner.port))
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.settimeout(1)
        try:
            for _ in range(2000):
                reader.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        started = time.monotonic()
        runner.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for thread in threads:
            thread.join(120)
        assert exit_code(runner, 60) == 0, runner.output()[-2000:]
        took = time.monotonic() - started
        reader.close()
    assert sorted(r.status_code for r in results) == [503, 503], [r.text[:200] for r in results]
    for r in results:
        assert "drain deadline of 2 seconds passed" in r.json()["detail"]["msg"], r.text
        assert r.headers["retry-after"]
    # 2 s of drain, the running step's end, the slow reader cut at its 3 s write timeout: well under the grace period.
    assert took < 30, took
