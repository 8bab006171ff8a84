"""The load signals an autoscaler reads (docs/scaling.md): queue depth, in flight, busy seconds, queued work."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from prometheus_client import Gauge

from kubediffusers.runner.metrics import BusyClock, Metrics, queued_work_seconds
from tests.runner.helpers import gated, metric, wait_until

BODY = {"prompt": "a cat", "num_inference_steps": 1}


@dataclass
class Running:
    step: int
    total_steps: int


@dataclass
class FakeWorkerView:
    depth: int = 0
    running: list[Running] = field(default_factory=list)
    max_batch_size: int = 1
    average_call_seconds: float = 2.0


@pytest.mark.parametrize(
    ("view", "seconds"),
    [
        (FakeWorkerView(), 0.0),  # idle
        (FakeWorkerView(depth=3), 6.0),  # three calls of 2 s
        (FakeWorkerView(depth=3, max_batch_size=2), 4.0),  # batches of two: two calls
        (FakeWorkerView(depth=0, running=[Running(5, 20)]), 1.5),  # three quarters of a call left
        (FakeWorkerView(depth=1, running=[Running(0, 0)]), 4.0),  # steps unknown yet: a whole call
    ],
)
def test_queued_work_seconds(view: FakeWorkerView, seconds: float) -> None:
    assert queued_work_seconds(view) == pytest.approx(seconds)


def test_busy_clock_counts_only_busy_time_including_the_call_in_progress() -> None:
    metrics = Metrics("text-to-image")
    clock = metrics.busy
    assert isinstance(clock, BusyClock) and clock.seconds() == 0.0
    clock.set(1)
    time.sleep(0.05)
    mid = clock.seconds()
    assert mid >= 0.05  # a scrape during a long call already sees it
    clock.set(1)  # repeated starts do not restart the clock
    clock.set(0)
    done = clock.seconds()
    time.sleep(0.05)
    assert clock.seconds() == done >= mid  # idle time is not counted
    assert "kubediffusers_busy 0.0" in metrics.render().decode()


def test_busy_clock_keeps_the_gauge() -> None:
    gauge = Gauge("g_test", "test", registry=None)
    clock = BusyClock(gauge)
    clock.set(1)
    assert gauge._value.get() == 1


def test_signals_follow_a_running_and_a_queued_request(make_client) -> None:
    client = make_client(max_queue_size=4)
    text = client.get("/metrics").text
    assert metric(text, "kubediffusers_in_flight") == 0 and metric(text, "kubediffusers_queued_work_seconds") == 0
    before = metric(text, "kubediffusers_busy_seconds_total")
    with gated(client) as gate, ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, "/text-to-image", json=BODY)
        gate.wait_entered()
        queued = pool.submit(client.post, "/text-to-image", json=BODY)
        wait_until(lambda: metric(client.get("/metrics").text, "kubediffusers_queue_depth") == 1, what="one queued")
        text = client.get("/metrics").text
        assert metric(text, "kubediffusers_in_flight") == 1
        assert metric(text, "kubediffusers_queued_work_seconds") > 0  # the queued call plus what is left of the running one
        time.sleep(0.05)
        assert metric(client.get("/metrics").text, "kubediffusers_busy_seconds_total") > before  # counted while busy
        gate.release.set()
        assert running.result(timeout=30).status_code == 200 and queued.result(timeout=30).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "kubediffusers_in_flight") == 0 and metric(text, "kubediffusers_queue_depth") == 0
    assert metric(text, "kubediffusers_queued_work_seconds") == 0
    assert metric(text, "kubediffusers_busy_seconds_total") >= 0.05
