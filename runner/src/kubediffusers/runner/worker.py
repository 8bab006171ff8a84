"""One inference worker behind a bounded queue, with dynamic batching.

The event loop only queues and awaits; the pipeline runs on a single thread of
its own, so health, metrics and new requests are answered while an image is
being generated, and GPU work never runs concurrently on one device. When a
job is taken, queued jobs with the same batch key (same size, steps, guidance,
...) join it, up to ``max_batch_size`` images, waiting at most the batch window
for more to arrive: one pipeline call then serves them all. While a call runs,
a full batch already queued is handed to the inference thread behind it, so
under load the device goes from call to call without waiting for the event
loop (which is then busy answering the last call's requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubediffusers.runner.errors import ClientGone, QueueFull, RequestTimedOut, ShuttingDown
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.types import Cancelled, StepCallback

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Job(Generic[T]):
    """One request's GPU work. ``execute(works, on_step)`` runs on the worker
    thread and returns one result per work; jobs with equal ``batch_key`` may
    be executed together."""

    work: Any
    execute: Callable[[list[Any], StepCallback], list[T]]
    batch_key: Hashable | None = None
    weight: int = 1  # images this job adds to a batch
    future: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    step: int = 0
    total_steps: int = 0
    cancelled: str | None = None  # why nobody wants the result any more
    # Called on the inference thread with the job's result the moment the call returns,
    # to start what comes next on another thread (the answer's encoding: routes.delivery);
    # what it returns (quickly) is what the job delivers. No event-loop wake-up in between.
    then: Callable[[T], Any] | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        """Skip it if queued; stop it at the next step if running (unless batch mates still want theirs)."""
        self.cancelled = self.cancelled or reason


class InferenceWorker:
    def __init__(
        self,
        executor: ThreadPoolExecutor,
        metrics: Metrics,
        max_queue_size: int,
        max_batch_size: int = 1,
        batch_window_seconds: float = 0.0,
    ) -> None:
        self._executor = executor
        self._metrics = metrics
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.batch_window_seconds = batch_window_seconds
        self._pending: deque[Job[Any]] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running: list[Job[Any]] = []
        self.staged: list[Job[Any]] = []  # taken from the queue, to run right after ``running`` (_stage_behind)
        self._last_batch_requests = 1
        self.draining: str | None = None  # set at shutdown: why new work is refused
        # Moving average of a pipeline call's time, used to tell clients when to retry.
        self._avg_seconds = 1.0
        metrics.watch(self)  # in flight, busy seconds, queued work (metrics.py)

    @property
    def depth(self) -> int:
        """Jobs waiting that someone still wants (a cancelled one only waits to be dropped), staged ones included."""
        return sum(1 for job in (*self.staged, *self._pending) if job.cancelled is None)

    @property
    def average_call_seconds(self) -> float:
        return self._avg_seconds

    @property
    def busy(self) -> bool:
        return bool(self.running)

    @property
    def idle(self) -> bool:
        """Nothing running and nothing queued (what a drain waits for)."""
        return not self.running and not self.staged and not self._pending

    def fail_all(self, exc: BaseException) -> int:
        """Fail every queued and running job with ``exc`` (the drain deadline passed); the running call stops at its next step."""
        jobs = [*self.running, *self.staged, *self._pending]
        self._pending.clear()
        for job in jobs:
            job.cancel("shutdown")
            self._fail(job, exc)
        self._metrics.queue_depth.set(0)
        return len(jobs)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="inference-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in [*self.staged, *self._pending]:
            if not job.future.done():
                job.future.set_exception(ClientGone("the runner is shutting down"))
        self.staged = []
        self._pending.clear()

    def retry_after(self) -> int:
        calls = math.ceil(self.depth / self.max_batch_size) + (1 if self.busy else 0)
        return max(1, min(60, math.ceil(calls * self._avg_seconds)))

    def submit(self, job: Job[T]) -> Job[T]:
        if self.draining is not None:
            self._metrics.rejected.labels("shutting_down").inc()
            raise ShuttingDown(self.draining)
        self._drop_cancelled()
        if len(self._pending) >= self.max_queue_size:
            self._metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"the queue is full ({self.max_queue_size} requests waiting); retry later",
                retry_after=self.retry_after(),
            )
        self._pending.append(job)
        self._arrived.set()
        self._metrics.queue_depth.set(self.depth)
        return job

    def _drop_cancelled(self) -> None:
        """Free the slots of queued jobs nobody wants any more (cancelled async jobs), at once rather than at their turn."""
        for job in list(self._pending):
            if (reason := job.cancelled) is not None:
                self._pending.remove(job)
                self._metrics.rejected.labels(reason).inc()
                self._fail(job, ClientGone(reason.replace("_", " ")))

    async def result(self, job: Job[T], timeout: float) -> T:
        """Wait for a job; on timeout it is cancelled so the worker moves on."""
        try:
            # The job's own future, awaited under a deadline: no shield and no wait_for
            # futures, each a loop iteration more before the request resumes. A timeout
            # or a cancelled request cancels the future; the worker skips a done future.
            async with asyncio.timeout(timeout):
                return await job.future
        except TimeoutError:
            job.cancel("timeout")
            self._metrics.rejected.labels("timeout").inc()
            raise RequestTimedOut(f"the request did not finish within {timeout:g} seconds") from None
        except asyncio.CancelledError:
            job.cancel("client_disconnected")
            raise

    # -- the loop ------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[Job[Any]] = []
        call: asyncio.Future[list[Any]] | None = None
        while True:
            if call is None:
                batch = await self._next_batch()
                call = self._launch(loop, batch)
            self.running = batch
            self._metrics.busy.set(1)
            # A full batch already waiting is queued on the inference thread behind the running
            # call: it starts the moment that call ends, not after a turn of this (busy) event loop.
            staged = await self._stage_behind(call)
            following = self._launch(loop, staged) if staged else None
            self.staged = staged or []
            await self._deliver(batch, call)
            self.staged = []
            batch, call = staged or [], following
            if call is None:
                self.running = []
                self._metrics.busy.set(0)

    def _launch(self, loop: asyncio.AbstractEventLoop, batch: list[Job[Any]]) -> asyncio.Future[list[Any]]:
        self._metrics.queue_depth.set(self.depth)
        self._metrics.batch_images.observe(sum(j.weight for j in batch))
        self._metrics.batch_requests.observe(len(batch))
        return loop.run_in_executor(self._executor, self._execute, batch)

    async def _deliver(self, batch: list[Job[Any]], call: asyncio.Future[list[Any]]) -> None:
        """Each job's result, or the call's error for each (the waiting requests map it)."""
        try:
            results = await call
        except Cancelled:
            for job in batch:
                self._fail(job, ClientGone(f"{job.cancelled or 'cancelled'} while running"))
            self._metrics.rejected.labels("cancelled").inc(len(batch))
        except BaseException as exc:
            for job in batch:
                self._fail(job, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    async def _stage_behind(self, call: asyncio.Future[list[Any]]) -> list[Job[Any]] | None:
        """While ``call`` runs: a full batch taken from the queue as soon as one is there,
        or None once the call has ended (the next batch is then formed as usual, window and all)."""
        if self.max_batch_size <= 1:
            return None
        # The call's end sets the arrival event too: one event to wait on, not a task and
        # asyncio.wait per call (the event's other waiters re-check the queue and wait again).
        call.add_done_callback(lambda _: self._arrived.set())
        while not call.done():
            full = self._take_full_batch()
            if full is not None:
                return full
            self._arrived.clear()
            await self._arrived.wait()
        return None

    def _take_full_batch(self) -> list[Job[Any]] | None:
        """The first wanted job and its queued mates when they fill a batch (``max_batch_size``
        images); None otherwise: a partial batch waits for the window, after the running call."""
        head = next((job for job in self._pending if job.cancelled is None), None)
        if head is None or head.batch_key is None:
            return None
        batch, images = [], 0
        for job in self._pending:
            if job.cancelled is None and job.batch_key == head.batch_key and images + job.weight <= self.max_batch_size:
                batch.append(job)
                images += job.weight
        if images < self.max_batch_size:
            return None
        for job in batch:
            self._pending.remove(job)
        self._last_batch_requests = len(batch)
        return batch

    def _execute(self, batch: list[Job[Any]]) -> list[Any]:
        """On the inference thread: the pipeline call, then each job's ``then`` (not for a job nobody waits for)."""
        started = time.monotonic()
        for job in batch:
            job.started_at = started
            self._metrics.queue_wait_seconds.labels(self._metrics.task).observe(started - job.enqueued_at)
        if all(job.cancelled for job in batch):  # a staged batch whose clients all left while it waited
            raise Cancelled()
        results = batch[0].execute([j.work for j in batch], self._step_callback(batch))
        elapsed = time.monotonic() - started
        self._metrics.inference_seconds.labels(self._metrics.task).observe(elapsed)
        self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * elapsed
        return [job.then(result) if job.then is not None and job.cancelled is None else result for job, result in zip(batch, results, strict=True)]

    @staticmethod
    def _fail(job: Job[Any], exc: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(exc)

    @staticmethod
    def _step_callback(batch: list[Job[Any]]) -> StepCallback:
        def on_step(step: int, total: int) -> None:
            for job in batch:
                job.step, job.total_steps = step, total
            # Stop only when nobody in the batch wants a result any more.
            if all(job.cancelled for job in batch):
                raise Cancelled()

        return on_step

    async def _next_batch(self) -> list[Job[Any]]:
        head = await self._next_wanted()
        batch, images = [head], head.weight
        if head.batch_key is None or self.max_batch_size <= 1:
            return batch
        loop = asyncio.get_running_loop()
        # A lone client (nothing queued, and the last call served one request)
        # would only pay the window: wait for batch mates when traffic has shown some.
        window = self.batch_window_seconds if self._pending or self._last_batch_requests > 1 else 0.0
        deadline = loop.time() + window
        while images < self.max_batch_size:
            for job in list(self._pending):
                if job.batch_key != head.batch_key or images + job.weight > self.max_batch_size:
                    continue
                self._pending.remove(job)
                if self._unwanted(job):
                    continue
                batch.append(job)
                images += job.weight
            remaining = deadline - loop.time()
            if images >= self.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._last_batch_requests = len(batch)
        return batch

    async def _next_wanted(self) -> Job[Any]:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            job = self._pending.popleft()
            if not self._unwanted(job):
                return job

    def _unwanted(self, job: Job[Any]) -> bool:
        # A client that left has cancelled its job already (routes.delivery.watch_disconnect).
        reason = job.cancelled
        if reason is None:
            return False
        log.info("dropping a queued request: %s", reason.replace("_", " "))
        self._metrics.rejected.labels(reason).inc()
        self._fail(job, ClientGone(reason.replace("_", " ")))
        self._metrics.queue_depth.set(self.depth)
        return True
