"""Asynchronous jobs: generations a client submits now and collects later.

An async job goes through the same bounded queue and inference thread as a
synchronous request; only the waiting differs. Nobody holds a connection open,
so the job is never dropped for a disconnect and no request timeout applies:
it runs when its turn comes and runs to the end. Its outcome is kept in memory
for a bounded time and count, then forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from kubediffusers.runner.errors import JobCancelled, QueueFull, RunnerError
from kubediffusers.runner.worker import Job

log = logging.getLogger(__name__)


JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class AsyncJob:
    id: str
    task: str
    job: Job[Any]  # the worker's job: its started_at, step and total_steps are the progress
    render: Callable[[Any], dict[str, Any]]  # result -> the sync call's JSON body
    respond: Callable[[Any, Any], Any] | None = None  # (request, result) -> the sync call's Response
    created_at: float = field(default_factory=time.time)
    result: Any = None  # the raw result, for /jobs/{id}/result with Accept
    body: dict[str, Any] | None = None  # the rendered JSON result
    error: RunnerError | None = None
    finished_at: float | None = None  # monotonic, for expiry
    waiter: asyncio.Task[None] | None = None

    @property
    def status(self) -> JobStatus:
        if self.finished_at is not None:
            return "failed" if self.error is not None else "done"
        return "running" if self.job.started_at is not None else "queued"


class JobStore:
    """Jobs by id. Finished jobs are kept ``ttl_seconds`` and at most
    ``max_jobs`` jobs are kept in all; when full, the oldest finished go first."""

    def __init__(self, ttl_seconds: float, max_jobs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_jobs = max_jobs
        self._clock = clock
        self._jobs: dict[str, AsyncJob] = {}  # insertion order = submission order

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> AsyncJob | None:
        self._expire()
        return self._jobs.get(job_id)

    def make_room(self) -> None:
        """Call before queueing a new job: frees a slot or refuses with 503."""
        self._expire()
        if len(self._jobs) < self.max_jobs:
            return
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None:
                del self._jobs[job_id]
                if len(self._jobs) < self.max_jobs:
                    return
        raise QueueFull(f"{self.max_jobs} unfinished jobs are already kept; retry later", retry_after=5)

    def add(
        self,
        job: Job[Any],
        task: str,
        render: Callable[[Any], dict[str, Any]],
        respond: Callable[[Any, Any], Any] | None = None,
    ) -> AsyncJob:
        """Track a job already submitted to the worker until it finishes."""
        record = AsyncJob(id=secrets.token_urlsafe(16), task=task, job=job, render=render, respond=respond)
        self._jobs[record.id] = record
        record.waiter = asyncio.create_task(self._wait(record), name=f"job-{record.id}")
        return record

    def cancel(self, record: AsyncJob) -> None:
        """Stop an unfinished job: skipped when its turn comes if queued, stopped
        at its next denoising step if running. It reads as failed at once."""
        if record.finished_at is not None:
            return
        record.job.cancel()
        record.error = JobCancelled(f"job {record.id} was cancelled by DELETE /jobs/{record.id}")
        record.finished_at = self._clock()

    def forget(self, record: AsyncJob) -> None:
        self._jobs.pop(record.id, None)

    async def _wait(self, record: AsyncJob) -> None:
        error: RunnerError | None = None
        try:
            result = await record.job.future
            if record.finished_at is None:
                # PNG encoding is CPU work: keep it off the event loop.
                record.body = await asyncio.to_thread(record.render, result)
                record.result = result
        except RunnerError as exc:
            error = exc
        except asyncio.CancelledError:
            error = RunnerError("the runner stopped before the job finished")
            raise
        except Exception as exc:  # anything unexpected is logged, never shown
            log.exception("async job %s failed", record.id, exc_info=exc)
            error = RunnerError("internal error; see the runner's log")
        finally:
            # A job cancelled by the client is already finished: what the worker says later does not change that.
            if record.finished_at is None:
                record.error = error
                record.finished_at = self._clock()

    def _expire(self) -> None:
        now = self._clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > self.ttl_seconds:
                del self._jobs[job_id]

    def expires_at(self, record: AsyncJob) -> float | None:
        """Wall-clock time after which a finished job is forgotten."""
        if record.finished_at is None:
            return None
        return time.time() + self.ttl_seconds - (self._clock() - record.finished_at)


class JobError(BaseModel):
    msg: str = Field(description="Why the job failed.")
    status_code: int = Field(description="The HTTP status the synchronous call would have answered.")


class JobState(BaseModel):
    id: str = Field(description="The job's id; poll GET /jobs/{id}.")
    task: str
    status: JobStatus = Field(description="queued, running, done or failed.")
    created_at: float = Field(description="Submission time, Unix seconds.")
    step: int = Field(description="Denoising steps done so far (all outputs of the request together).")
    total_steps: int | None = Field(description="Denoising steps in all, known once the job runs.")
    result: dict[str, Any] | None = Field(description="When done: the body the synchronous call returns.")
    error: JobError | None = Field(description="When failed: why.")
    expires_at: float | None = Field(description="When finished: the Unix time after which the job is forgotten.")


def job_state(record: AsyncJob, store: JobStore) -> JobState:
    error = record.error
    return JobState(
        id=record.id,
        task=record.task,
        status=record.status,
        created_at=record.created_at,
        step=record.job.step,
        total_steps=record.job.total_steps or None,
        result=record.body if error is None else None,
        error=JobError(msg=error.msg, status_code=error.status_code) if error is not None else None,
        expires_at=store.expires_at(record),
    )
