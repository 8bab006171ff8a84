"""One inference worker behind a bounded queue.

The event loop only queues and awaits; the pipeline runs on a single thread of
its own, so health, metrics and new requests are answered while an image is
being generated, and GPU work never runs concurrently on one device.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubediffusers.runner.errors import ClientGone, QueueFull, RequestTimedOut
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.pipelines.base import Cancelled

log = logging.getLogger(__name__)

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]


@dataclass
class Job(Generic[T]):
    """A unit of GPU work: ``run(on_step)`` executes on the worker thread."""

    run: Callable[[Callable[[int, int], None]], T]
    disconnected: Disconnected | None = None
    future: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    step: int = 0
    total_steps: int = 0
    cancelled: bool = False

    def cancel(self) -> None:
        """Nobody wants the result: skip it if queued, stop it at the next step if running."""
        self.cancelled = True

    def _on_step(self, step: int, total: int) -> None:
        self.step, self.total_steps = step, total
        if self.cancelled:
            raise Cancelled()


class InferenceWorker:
    def __init__(self, executor: ThreadPoolExecutor, metrics: Metrics, max_queue_size: int) -> None:
        self._executor = executor
        self._metrics = metrics
        self._queue: asyncio.Queue[Job[Any]] = asyncio.Queue(maxsize=max_queue_size)
        self._task: asyncio.Task[None] | None = None
        self.current: Job[Any] | None = None
        # Moving average of inference time, used to tell clients when to retry.
        self._avg_seconds = 1.0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def busy(self) -> bool:
        return self.current is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="inference-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(ClientGone("the runner is shutting down"))

    def retry_after(self) -> int:
        waiting = self.depth + (1 if self.busy else 0)
        return max(1, min(60, math.ceil(waiting * self._avg_seconds)))

    def submit(self, job: Job[T]) -> Job[T]:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"the queue is full ({self._queue.maxsize} requests waiting); retry later",
                retry_after=self.retry_after(),
            ) from None
        self._metrics.queue_depth.set(self.depth)
        return job

    async def result(self, job: Job[T], timeout: float) -> T:
        """Wait for a job; on timeout it is cancelled so the worker moves on."""
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.cancel()
            self._metrics.rejected.labels("timeout").inc()
            raise RequestTimedOut(f"the request did not finish within {timeout:g} seconds") from None
        except asyncio.CancelledError:
            job.cancel()
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            self._metrics.queue_depth.set(self.depth)
            if await self._unwanted(job):
                continue
            self.current = job
            self._metrics.busy.set(1)
            job.started_at = time.monotonic()
            self._metrics.queue_wait_seconds.labels(self._metrics.task).observe(job.started_at - job.enqueued_at)
            try:
                result = await loop.run_in_executor(self._executor, job.run, job._on_step)
            except Cancelled:
                self._metrics.rejected.labels("cancelled").inc()
                if not job.future.done():
                    job.future.set_exception(ClientGone("cancelled while running"))
            except BaseException as exc:  # delivered to the waiting request, which maps it
                if not job.future.done():
                    job.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                elapsed = time.monotonic() - job.started_at
                self._metrics.inference_seconds.labels(self._metrics.task).observe(elapsed)
                self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * elapsed
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self.current = None
                self._metrics.busy.set(0)

    async def _unwanted(self, job: Job[Any]) -> bool:
        reason = None
        if job.cancelled:
            reason = "timeout"
        elif job.disconnected is not None:
            try:
                if await job.disconnected():
                    reason = "client_disconnected"
            except Exception:  # a broken connection counts as gone
                reason = "client_disconnected"
        if reason is None:
            return False
        log.info("dropping a queued request: %s", reason.replace("_", " "))
        self._metrics.rejected.labels(reason).inc()
        if not job.future.done():
            job.future.set_exception(ClientGone(reason.replace("_", " ")))
        return True
