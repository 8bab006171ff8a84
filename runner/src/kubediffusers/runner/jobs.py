"""Asynchronous jobs: generations a client submits now and collects later.

An async job goes through the same bounded queue and inference thread as a
synchronous request; only the waiting differs. Nobody holds a connection open,
so the job is never dropped for a disconnect and no request timeout applies:
it runs when its turn comes and runs to the end. Its outcome is kept in memory,
in one encoded form (the JSON body of PNG data URLs; a raw PNG or mp4 asked
for with Accept is derived from it once and kept), for a bounded time, count
and size, then forgotten; a 404 says which bound forgot it.

With ``shared_jobs`` the store also keeps its jobs as files on the directory
every replica mounts (``jobfiles``): the replica that accepted a job runs it
and keeps it in memory while it is unfinished (progress, cancel), mirroring
its state to the files; once finished, the files are the only copy, so every
replica answers for it alike (a video's mp4 is made once and kept beside
it, see ``jobfiles``), and a cancel from another replica reaches the owner
through a marker file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from kubediffusers.runner import jobfiles
from kubediffusers.runner.errors import JobCancelled, JobStorageFailed, QueueFull, RunnerError
from kubediffusers.runner.jobfiles import JobFiles, StoredJob
from kubediffusers.runner.worker import Job

log = logging.getLogger(__name__)

T = TypeVar("T")


JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class AsyncJob:
    id: str
    task: str
    job: Job[Any]  # the worker's job: its started_at, step and total_steps are the progress
    render: Callable[[Any], dict[str, Any]]  # result -> the sync call's JSON body
    respond: Callable[[Any, Any], Any] | None = None  # (request, body) -> the sync call's Response
    created_at: float = field(default_factory=time.time)
    body: dict[str, Any] | None = None  # the rendered JSON result: the one form kept
    raw: dict[str, Any] = field(default_factory=dict)  # media type -> a Response derived from the body (mp4, PNG), kept once made
    size: int = 0  # bytes held: the body's data URLs and the raw answers
    error: RunnerError | None = None
    finished_at: float | None = None  # monotonic, for expiry
    finished_wall: float | None = None  # the same moment in Unix time, for the shared files
    fps: int | None = None  # a video's frame rate: what another replica needs to make its mp4
    slot: int | None = None  # shared jobs: the slot of the count bound it holds (jobfiles)
    waiter: asyncio.Task[None] | None = None

    @property
    def status(self) -> JobStatus:
        if self.finished_at is not None:
            return "failed" if self.error is not None else "done"
        return "running" if self.job.started_at is not None else "queued"


# Ids of forgotten jobs remembered, with why, so that their 404 can say it.
FORGOTTEN_KEPT = 10_000


def body_bytes(body: dict[str, Any]) -> int:
    """What a rendered body holds in memory, near enough: its strings (the data URLs)."""
    total = 0
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def release(job: Job[Any]) -> None:
    """Let go of a finished job's inputs and raw outputs (PIL images): its
    progress stays readable, and the rendered body is all that is kept."""
    job.work = None
    if job.future.done() and not job.future.cancelled() and job.future.exception() is None:
        emptied: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        emptied.set_result(None)
        job.future = emptied


class JobStore:
    """Jobs by id. Finished jobs are kept ``ttl_seconds``; at most ``max_jobs``
    jobs and ``max_bytes`` of results are kept in all; past either, the oldest
    finished go first."""

    def __init__(
        self,
        ttl_seconds: float,
        max_jobs: int,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
        files: JobFiles | None = None,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.files = files  # shared_jobs: the directory every replica reads
        self.owner = f"{os.uname().nodename}/{os.getpid()}"
        self._clock = clock
        self._jobs: dict[str, AsyncJob] = {}  # insertion order = submission order
        self._forgotten: OrderedDict[str, str] = OrderedDict()  # id -> why it was forgotten
        self._sync: asyncio.Task[None] | None = None
        self._slots: dict[str, int] = {}  # admitted, not added yet: id -> slot held
        self._file_lock = threading.Lock()  # a progress write never lands after the final one

    @property
    def bytes_held(self) -> int:
        return sum(job.size for job in self._jobs.values())

    def forgotten(self, job_id: str) -> str | None:
        """Why a job this store once kept was forgotten (None: never kept, or long ago)."""
        return self._forgotten.get(job_id)

    def _drop(self, job_id: str, why: str) -> None:
        self._jobs.pop(job_id, None)
        self._forgotten[job_id] = why
        while len(self._forgotten) > FORGOTTEN_KEPT:
            self._forgotten.popitem(last=False)

    def account(self, record: AsyncJob, size: int) -> None:
        """Add ``size`` bytes to what ``record`` holds, then forget the oldest finished jobs while over ``max_bytes`` (never ``record`` itself)."""
        record.size += size
        if self.max_bytes is None:
            return
        for job_id, job in list(self._jobs.items()):
            if self.bytes_held <= self.max_bytes:
                return
            if job.finished_at is not None and job is not record:
                self._drop(job_id, f"the runner keeps at most {self.max_bytes} bytes of job results and newer results needed the room")

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
                self._drop(job_id, f"the runner keeps at most {self.max_jobs} jobs and newer ones needed the room")
                if len(self._jobs) < self.max_jobs:
                    return
        raise QueueFull(f"{self.max_jobs} unfinished jobs are already kept; retry later", retry_after=5)

    async def admit(self) -> str:
        """Call before queueing a new job: frees room or refuses with 503 (the shared directory's bounds when shared);
        returns the new job's id (for ``add``; ``withdraw`` it if the job is not queued after all)."""
        job_id = secrets.token_urlsafe(16)
        if self.files is None:
            self.make_room()
        else:
            self._slots[job_id] = await self.on_disk(self.files.make_room, job_id)
        return job_id

    async def withdraw(self, job_id: str) -> None:
        """An admitted job that was not queued after all (the worker's queue was full): its slot is free again."""
        slot = self._slots.pop(job_id, None)
        if slot is not None and self.files is not None:
            with contextlib.suppress(JobStorageFailed):  # a slot left behind is freed by a sweep after SLOT_GRACE_SECONDS
                await self.on_disk(self.files.release_slot, job_id, slot)

    async def on_disk(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking call on the shared directory, off the loop; its failure is a clear 503."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except OSError as exc:
            log.warning("the shared job directory failed: %s", exc)
            raise JobStorageFailed(f"the shared job directory could not be read or written ({exc.strerror or exc}); retry later") from None

    def add(
        self,
        job: Job[Any],
        task: str,
        render: Callable[[Any], dict[str, Any]],
        respond: Callable[[Any, Any], Any] | None = None,
        fps: int | None = None,
        job_id: str | None = None,
    ) -> AsyncJob:
        """Track a job already submitted to the worker until it finishes (``job_id``: what ``admit`` returned)."""
        job_id = job_id or secrets.token_urlsafe(16)
        record = AsyncJob(id=job_id, task=task, job=job, render=render, respond=respond, fps=fps, slot=self._slots.pop(job_id, None))
        self._jobs[record.id] = record
        record.waiter = asyncio.create_task(self._wait(record), name=f"job-{record.id}")
        if self.files is not None and (self._sync is None or self._sync.done()):
            self._sync = asyncio.create_task(self._sync_files(), name="jobs-sync")
        return record

    async def publish(self, record: AsyncJob) -> None:
        """Shared: write the new job's state before it is answered, since the client's next poll may reach another replica."""
        if self.files is None:
            return
        try:
            await self.on_disk(self._persist, record)
        except JobStorageFailed:
            record.job.cancel()  # nobody could ever poll it
            self._jobs.pop(record.id, None)
            if record.slot is not None and self.files is not None:
                with contextlib.suppress(OSError):  # else freed by a sweep after SLOT_GRACE_SECONDS
                    await asyncio.to_thread(self.files.release_slot, record.id, record.slot)
            raise

    def cancel(self, record: AsyncJob, how: str = "") -> None:
        """Stop an unfinished job: skipped when its turn comes if queued, stopped
        at its next denoising step if running. It reads as failed at once."""
        if record.finished_at is not None:
            return
        record.job.cancel()
        record.error = JobCancelled(f"job {record.id} was cancelled by DELETE /jobs/{record.id}{how}")
        record.finished_at = self._clock()
        record.finished_wall = time.time()
        self._finish_shared(record)

    def unfinished_waiters(self) -> list[asyncio.Task[None]]:
        """The tasks of jobs not finished yet (a drain waits for them)."""
        return [r.waiter for r in self._jobs.values() if r.waiter is not None and not r.waiter.done()]

    def forget(self, record: AsyncJob) -> None:
        self._drop(record.id, f"it was deleted with DELETE /jobs/{record.id}")

    async def _wait(self, record: AsyncJob) -> None:
        error: RunnerError | None = None
        try:
            result = await record.job.future
            if record.finished_at is None:
                # PNG encoding is CPU work: keep it off the event loop. Only the body is kept, not the images.
                record.body = await asyncio.to_thread(record.render, result)
                del result
                if self.files is not None:
                    # The result is whole on disk before any state says done.
                    try:
                        record.size = await asyncio.to_thread(self.files.write_result, record.id, record.body)
                    except OSError as exc:
                        raise RunnerError(
                            f"the result could not be written to the shared job directory ({exc.strerror or exc}); submit the job again"
                        ) from None
                    record.finished_at, record.finished_wall = self._clock(), time.time()
                    try:
                        await asyncio.to_thread(self._write_done, record)
                    except OSError:  # the result is whole on disk but no state says so: this replica keeps the job
                        log.exception("job %s: its final state could not be written to the shared directory; this replica keeps it", record.id)
                    else:
                        self._jobs.pop(record.id, None)
                else:
                    self.account(record, body_bytes(record.body))
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
                record.finished_wall = time.time()
                self._finish_shared(record)
            release(record.job)

    # ---- shared jobs (jobfiles)

    def stored(self, record: AsyncJob) -> dict[str, Any]:
        """What the state file says of ``record``."""
        error = record.error
        return {
            "id": record.id,
            "task": record.task,
            "status": record.status,
            "created_at": record.created_at,
            "step": record.job.step,
            "total_steps": record.job.total_steps or None,
            "error": {"msg": error.msg, "status_code": error.status_code} if error is not None else None,
            "finished_at": record.finished_wall if record.finished_at is not None else None,
            "size": record.size,
            "fps": record.fps,
            "slot": record.slot,
            "owner": self.owner,
        }

    def _persist(self, record: AsyncJob, *, final: bool = False) -> None:
        assert self.files is not None
        with self._file_lock:
            if final or record.finished_at is None:
                self.files.write_state(self.stored(record))

    def _finish_shared(self, record: AsyncJob) -> None:
        """Shared: the final state goes to the files, which from now on are the only copy."""
        if self.files is None:
            return
        try:
            self._persist(record, final=True)  # small, and it must be written even while the loop shuts down
        except OSError:
            log.exception("job %s: its final state could not be written to the shared directory; this replica keeps it", record.id)
            return
        self._jobs.pop(record.id, None)

    def _write_done(self, record: AsyncJob) -> None:
        """Shared, off the loop: the final state of a job done, then the byte bound now that its result counts."""
        assert self.files is not None
        self._persist(record, final=True)
        try:
            self.files.sweep(keep=record.id)
        except OSError:
            log.exception("the shared job directory could not be swept")

    async def _sync_files(self) -> None:
        """Shared: while this replica runs jobs, write their progress and heartbeat, and act on cancel requests from other replicas."""
        written: dict[str, tuple[Any, ...]] = {}
        while unfinished := [r for r in self._jobs.values() if r.finished_at is None]:
            now = time.monotonic()
            due = []
            previous, written = written, {}  # only the jobs still unfinished: a busy replica's loop never ends
            for record in unfinished:
                seen = (record.status, record.job.step, record.job.total_steps, now // jobfiles.HEARTBEAT_SECONDS)
                due.append(previous.get(record.id) != seen)
                written[record.id] = seen
            try:
                cancelled = await asyncio.to_thread(self._sync_once, unfinished, due)
            except OSError:
                log.exception("the shared job directory could not be read or written")
                cancelled = []
            for record in cancelled:
                self.cancel(record, " (through another replica)")
            await asyncio.sleep(jobfiles.POLL_SECONDS)

    def _sync_once(self, records: list[AsyncJob], due: list[bool]) -> list[AsyncJob]:
        assert self.files is not None
        cancelled = []
        for record, write in zip(records, due, strict=True):
            if self.files.cancel_requested(record.id):
                cancelled.append(record)
            elif write:
                self._persist(record)
        return cancelled

    def read_shared(self, job_id: str) -> StoredJob | None:
        """A job from the shared directory (blocking file reads: call off the loop)."""
        assert self.files is not None
        self.files.sweep_now_and_then()
        return self.files.read(job_id)

    def _expire(self) -> None:
        now = self._clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > self.ttl_seconds:
                self._drop(job_id, f"it finished more than {self.ttl_seconds:g} seconds ago and expired")

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


def stored_job_state(stored: StoredJob, ttl_seconds: float) -> JobState:
    """``job_state`` of a job read from the shared directory."""
    state = stored.state
    error = state.get("error")
    finished_at = state.get("finished_at")
    return JobState(
        id=state["id"],
        task=state["task"],
        status=state["status"],
        created_at=state["created_at"],
        step=state.get("step") or 0,
        total_steps=state.get("total_steps"),
        result=stored.result if state["status"] == "done" else None,
        error=JobError(msg=error["msg"], status_code=error["status_code"]) if error else None,
        expires_at=float(finished_at) + ttl_seconds if finished_at is not None else None,
    )
