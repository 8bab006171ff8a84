"""A full batch queued while a call runs is staged behind it on the inference
thread (worker._stage_behind): it starts without a turn of the event loop, a
partial one still waits for its window after the call, and staged jobs count
as queued, are failed by a drain's deadline and by a stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kubediffusers.runner.errors import ClientGone
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.worker import InferenceWorker, Job

BATCH = 4


class Device:
    """An ``execute`` whose calls a test holds and releases; it records each call's works."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.started: list[threading.Event] = [threading.Event() for _ in range(8)]
        self.release: list[threading.Event] = [threading.Event() for _ in range(8)]

    def __call__(self, works: list[int], on_step: Any) -> list[int]:
        index = len(self.calls)
        self.calls.append(list(works))
        self.started[index].set()
        while not self.release[index].wait(0.01):
            on_step(0, 1)
        return [w * 10 for w in works]


@pytest.fixture
def device() -> Device:
    return Device()


@pytest.fixture
async def worker(device: Device) -> AsyncIterator[InferenceWorker]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
    worker = InferenceWorker(executor, Metrics("text-to-image"), max_queue_size=32, max_batch_size=BATCH, batch_window_seconds=0.05)
    worker.start()
    try:
        yield worker
    finally:
        for event in device.release:
            event.set()
        await worker.stop()
        executor.shutdown(wait=True)


def jobs(device: Device, works: range) -> list[Job[int]]:
    return [Job(work=w, execute=device, batch_key="same") for w in works]


async def running_with_a_full_batch_staged(worker: InferenceWorker, device: Device, first_work: int) -> tuple[Job[int], list[Job[int]]]:
    (first,) = jobs(device, range(1))
    worker.submit(first)
    await asyncio.to_thread(device.started[0].wait, 10)
    full = jobs(device, range(first_work, first_work + BATCH))
    for job in full:
        worker.submit(job)
    await until(lambda: worker.staged == full, "the full batch staged behind the running call")
    return first, full


async def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_a_full_batch_starts_the_moment_the_running_call_ends_without_the_event_loop(worker: InferenceWorker, device: Device) -> None:
    first, full = await running_with_a_full_batch_staged(worker, device, 10)
    assert worker.depth == BATCH and worker.busy and not worker.idle

    device.release[0].set()
    # The event loop is blocked right here: the staged batch can only start if the
    # inference thread takes it on its own.
    assert device.started[1].wait(10), "the staged batch waited for the event loop"
    assert device.calls == [[0], [10, 11, 12, 13]]
    device.release[1].set()
    assert await worker.result(first, 10) == 0
    assert [await worker.result(job, 10) for job in full] == [100, 110, 120, 130]
    await until(lambda: worker.idle and not worker.staged, "idle")


async def test_a_partial_batch_is_not_staged_and_still_gathers_mates_after_the_call(worker: InferenceWorker, device: Device) -> None:
    (first,) = jobs(device, range(1))
    worker.submit(first)
    await asyncio.to_thread(device.started[0].wait, 10)
    partial = jobs(device, range(20, 22))
    for job in partial:
        worker.submit(job)
    await asyncio.sleep(0.1)
    assert worker.staged == [] and worker.depth == 2
    device.release[0].set()
    await asyncio.to_thread(device.started[1].wait, 10)
    device.release[1].set()
    assert [await worker.result(job, 10) for job in partial] == [200, 210]
    assert device.calls == [[0], [20, 21]]  # one call for both, after the first


async def test_staged_jobs_whose_clients_all_left_never_reach_the_device(worker: InferenceWorker, device: Device) -> None:
    _, full = await running_with_a_full_batch_staged(worker, device, 30)
    for job in full:
        job.cancel("client_disconnected")
    assert worker.depth == 0
    device.release[0].set()
    for job in full:
        with pytest.raises(ClientGone):
            await worker.result(job, 10)
    assert device.calls == [[0]]


async def test_a_drain_deadline_fails_staged_jobs(worker: InferenceWorker, device: Device) -> None:
    first, full = await running_with_a_full_batch_staged(worker, device, 40)
    assert worker.fail_all(ClientGone("the drain deadline passed")) == 1 + BATCH
    for job in [first, *full]:
        with pytest.raises(ClientGone):
            await worker.result(job, 10)
    await until(lambda: worker.idle, "idle")
    assert device.calls == [[0]]  # the running call stopped at its next step; the staged one never started


async def test_a_stop_fails_staged_jobs(worker: InferenceWorker, device: Device) -> None:
    first, full = await running_with_a_full_batch_staged(worker, device, 50)
    await worker.stop()
    with pytest.raises(asyncio.CancelledError):  # as before staging: the running call's request sees the stop
        await first.future
    for job in full:
        with pytest.raises(ClientGone, match="shutting down"):
            await job.future
    assert worker.staged == []
