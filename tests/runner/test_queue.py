"""The bounded queue: overflow, timeouts, disconnects, OOM, health while busy."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import torch

from kubediffusers.runner.app import create_app
from tests.runner.helpers import ThreadedServer, gated, settings_for, wait_until

BODY = {"prompt": "a cat", "num_inference_steps": 1}


def test_health_answers_during_generation(make_client) -> None:
    client = make_client()
    with gated(client) as gate, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/text-to-image", json=BODY)
        gate.wait_entered()
        health = client.get("/health").json()
        assert health["status"] == "OK" and health["activity"] == "Busy"
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert "kubediffusers_busy 1.0" in client.get("/metrics").text
        gate.release.set()
        assert pending.result(timeout=30).status_code == 200
    assert client.get("/health").json()["activity"] == "Idle"


def test_queue_overflow_is_503_with_retry_after_and_the_server_recovers(make_client) -> None:
    client = make_client(max_queue_size=2)
    with gated(client) as gate, ThreadPoolExecutor(4) as pool:
        running = pool.submit(client.post, "/text-to-image", json=BODY)
        gate.wait_entered()
        queued = [pool.submit(client.post, "/text-to-image", json=BODY) for _ in range(2)]
        wait_until(lambda: client.get("/health").json()["queue_depth"] == 2, what="two queued")
        overflow = client.post("/text-to-image", json=BODY)
        assert overflow.status_code == 503
        assert int(overflow.headers["retry-after"]) >= 1
        assert "queue is full" in overflow.json()["detail"]["msg"]
        gate.release.set()
        assert [f.result(timeout=60).status_code for f in [running, *queued]] == [200, 200, 200]
    assert client.post("/text-to-image", json=BODY).status_code == 200
    assert 'kubediffusers_rejected_requests_total{reason="queue_full"} 1.0' in client.get("/metrics").text


def test_timeout_is_504_and_the_running_job_is_stopped(make_client) -> None:
    # The gate makes the first request time out whatever the deadline; the deadline must
    # still leave the last (ungated) request time to run on a loaded CI machine.
    client = make_client(request_timeout_seconds=3)
    with gated(client) as gate:
        r = client.post("/text-to-image", json=BODY)
        assert r.status_code == 504
        assert "3 seconds" in r.json()["detail"]["msg"]
        # Cancelled at its next step: the worker is free again without releasing the gate.
        wait_until(lambda: client.get("/health").json()["activity"] == "Idle", what="worker free")
        gate.release.set()
    assert client.post("/text-to-image", json=BODY).status_code == 200


def test_out_of_memory_answers_clearly_and_the_next_request_succeeds(make_client) -> None:
    client = make_client()
    pipe = client.app.state.context.model.pipeline.pipe
    real_unet_forward = pipe.unet.forward
    calls = {"n": 0}

    def exploding_forward(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    pipe.unet.forward = exploding_forward
    try:
        r = client.post("/text-to-image", json=BODY)
    finally:
        pipe.unet.forward = real_unet_forward
    assert calls["n"] == 1
    assert r.status_code == 503 and "out of memory" in r.json()["detail"]["msg"]
    assert "Retry-After" in r.headers
    assert "Tried to allocate" not in r.text
    assert client.post("/text-to-image", json=BODY).status_code == 200


def test_unexpected_error_is_500_without_a_stack_trace(make_client) -> None:
    client = make_client()
    pipeline = client.app.state.context.model.pipeline
    real = pipeline.run
    pipeline.run = lambda work, on_step=None: (_ for _ in ()).throw(RuntimeError("secret internals"))
    try:
        r = client.post("/text-to-image", json=BODY)
    finally:
        pipeline.run = real
    assert r.status_code == 500
    assert r.json() == {"detail": {"msg": "internal error; see the runner's log"}}
    assert client.post("/text-to-image", json=BODY).status_code == 200


def test_a_request_whose_client_left_before_its_turn_is_dropped(model_dir) -> None:
    app = create_app(settings_for(model_dir))
    with ThreadedServer(app) as server, gated(app) as gate, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, server.url + "/text-to-image", json=BODY, timeout=60)
        gate.wait_entered()

        def impatient() -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + "/text-to-image", json=BODY, timeout=0.5)

        impatient()  # queued, then the client hangs up: noticed at once, its slot is free
        wait_until(lambda: httpx.get(server.url + "/health").json()["queue_depth"] == 0, what="the abandoned request unqueued")
        gate.release.set()
        assert first.result(timeout=60).status_code == 200
        wait_until(lambda: httpx.get(server.url + "/health").json()["queue_depth"] == 0, what="queue drained")
        metrics = httpx.get(server.url + "/metrics").text
        assert 'kubediffusers_rejected_requests_total{reason="client_disconnected"} 1.0' in metrics
        assert gate.calls == 1  # the abandoned request never reached the pipeline


def test_a_running_request_whose_client_left_stops_at_the_next_step(model_dir) -> None:
    """The server's disconnect message cancels the job (routes.delivery.watch_disconnect): the
    pipeline call stops at its next step, without the gate ever letting it finish."""
    app = create_app(settings_for(model_dir))
    with ThreadedServer(app) as server, gated(app) as gate:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(60, read=0.3)) as impatient, ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(impatient.post, server.url + "/text-to-image", json=BODY)
            gate.wait_entered()
            waiting.result(timeout=30)
        wait_until(lambda: httpx.get(server.url + "/health").json()["activity"] == "Idle", what="the abandoned call stopped")
        metrics = httpx.get(server.url + "/metrics").text
        assert 'kubediffusers_rejected_requests_total{reason="cancelled"} 1.0' in metrics
        assert not gate.release.is_set() and gate.calls == 1
        gate.release.set()
        assert httpx.post(server.url + "/text-to-image", json=BODY, timeout=60).status_code == 200


async def test_then_runs_on_the_inference_thread_and_not_for_a_job_nobody_waits_for() -> None:
    import threading

    from kubediffusers.runner.metrics import Metrics
    from kubediffusers.runner.worker import InferenceWorker, Job

    executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
    worker = InferenceWorker(executor, Metrics("text-to-image"), max_queue_size=4)
    worker.start()
    threads: list[str] = []

    def then(result: int) -> tuple[str, int]:
        threads.append(threading.current_thread().name)
        return ("then", result)

    try:
        job: Job[Any] = Job(work=3, execute=lambda works, on_step: [w * 2 for w in works], then=then)
        worker.submit(job)
        assert await worker.result(job, 30) == ("then", 6)
        assert len(threads) == 1 and threads[0].startswith("inference")

        def cancel_while_running(works: list[int], on_step: Any) -> list[int]:
            gone.cancel("timeout")  # its client gave up during the call
            return [w * 2 for w in works]

        gone: Job[Any] = Job(work=4, execute=cancel_while_running, then=then)
        worker.submit(gone)
        assert await asyncio.wait_for(gone.future, 30) == 8  # delivered as it came: nobody encodes it
        assert len(threads) == 1
    finally:
        await worker.stop()
        executor.shutdown()
