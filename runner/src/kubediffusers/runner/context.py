"""What every route needs, created once per app and kept on ``app.state``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kubediffusers.runner.jobfiles import JobFiles
from kubediffusers.runner.jobs import JobStore
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.model import ModelHolder
from kubediffusers.runner.settings import ConfigurationError, RunnerSettings
from kubediffusers.runner.worker import InferenceWorker


@dataclass
class RunnerContext:
    settings: RunnerSettings
    metrics: Metrics
    model: ModelHolder
    worker: InferenceWorker
    jobs: JobStore
    executor: ThreadPoolExecutor

    @classmethod
    def create(cls, settings: RunnerSettings) -> RunnerContext:
        # One thread: the pipeline is not thread-safe and one GPU runs one call at a time.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        metrics = Metrics(settings.task.value)
        return cls(
            settings=settings,
            metrics=metrics,
            model=ModelHolder(settings, executor, metrics),
            worker=InferenceWorker(
                executor,
                metrics,
                settings.max_queue_size,
                max_batch_size=settings.max_batch_size,
                batch_window_seconds=settings.batch_window_ms / 1000,
            ),
            jobs=JobStore(settings.job_ttl_seconds, settings.max_jobs, max_bytes=settings.max_job_bytes, files=shared_job_files(settings)),
            executor=executor,
        )


def shared_job_files(settings: RunnerSettings) -> JobFiles | None:
    """The shared job directory (setting shared_jobs), made if missing; a runner that cannot make it does not start."""
    if not settings.shared_jobs:
        return None
    root = settings.resolved_jobs_dir()
    try:
        return JobFiles(root, settings.job_ttl_seconds, settings.max_jobs, settings.max_job_bytes)
    except OSError as exc:
        raise ConfigurationError(f"KUBEDIFFUSERS_JOBS_DIR: cannot make the shared job directory {root}: {exc.strerror or exc}") from None


def get_context(request: Request) -> RunnerContext:
    context: RunnerContext = request.app.state.context
    return context


async def context_of(request: Request) -> RunnerContext:
    # async: FastAPI runs a plain-def dependency on a worker thread, two thread
    # hand-offs per request for one attribute read (py-spy of kubediffusers-bench output).
    return get_context(request)


# The one way a route asks for the context.
Context = Annotated[RunnerContext, Depends(context_of)]
