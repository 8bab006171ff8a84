"""What every route needs, created once per app and kept on ``app.state``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request

from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.model import ModelHolder
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.worker import InferenceWorker


@dataclass
class RunnerContext:
    settings: RunnerSettings
    metrics: Metrics
    model: ModelHolder
    worker: InferenceWorker
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
            executor=executor,
        )


def get_context(request: Request) -> RunnerContext:
    return request.app.state.context
