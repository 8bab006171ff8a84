"""Finding the checkpoint in the local cache and bringing the pipeline up.

The runner never downloads: the fetch init container fills the cache, and this
module only looks there. Whatever goes wrong leaves the server up, not ready,
with the reason in /health and /readyz.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from kubediffusers.runner.errors import ModelUnavailable, NotReady, one_line
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.pipelines import pipeline_class
from kubediffusers.runner.pipelines.recompiles import RecompileWatch, UncompiledWatch
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.snapshots import locate

if TYPE_CHECKING:  # the pipeline layer imports torch: only when the model loads
    from kubediffusers.runner.pipelines.base import TaskPipeline

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "LOADING"
    OK = "OK"
    ERROR = "ERROR"


def find_snapshot(settings: RunnerSettings) -> tuple[Path, str]:
    """The snapshot folder and commit of the configured model, from the cache only
    (through the fetcher's marker: ``snapshots.locate``, the path every add-on takes too)."""
    found = locate(settings.model_dir, settings.model_id, settings.model_revision, settings.model_variant)
    return found.path, found.commit


class ModelHolder:
    """Owns the pipeline and its lifecycle: LOADING -> OK, or -> ERROR with a reason."""

    def __init__(self, settings: RunnerSettings, executor: ThreadPoolExecutor, metrics: Metrics) -> None:
        self.settings = settings
        self._executor = executor
        self._metrics = metrics
        self.state = ModelState.LOADING
        self.reason = "loading the model"
        self.revision: str | None = None
        self.pipeline: TaskPipeline | None = None
        self.recompiles = RecompileWatch(metrics.recompilations)
        self.uncompiled = UncompiledWatch(metrics.uncompiled_calls)

    @property
    def ready(self) -> bool:
        return self.state is ModelState.OK

    def require_ready(self) -> TaskPipeline:
        if self.pipeline is None or not self.ready:
            raise NotReady(f"the model is not ready: {self.reason}")
        return self.pipeline

    async def load(self) -> None:
        """Load and warm up on the inference thread, so torch state stays on one thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load_blocking)
        except ModelUnavailable as exc:
            self._fail(str(exc))
        except Exception as exc:  # any loader failure must leave the server up
            log.exception("model failed to load")
            self._fail(f"model failed to load: {one_line(exc)}")

    def close(self) -> None:
        """Stop counting compilations and holding torch to its graphs (dynamo's callbacks and
        stance are process-wide; tests make many apps)."""
        self.recompiles.remove()
        self.uncompiled.remove()

    def _fail(self, reason: str) -> None:
        self.state, self.reason, self.pipeline = ModelState.ERROR, reason, None
        self._metrics.ready.set(0)
        log.error("not ready: %s", reason)

    def _load_blocking(self) -> None:
        started = time.monotonic()
        snapshot, self.revision = find_snapshot(self.settings)
        log.info("loading %s (%s) from %s", self.settings.model_id, self.revision, snapshot)
        pipeline = pipeline_class(self.settings.task, snapshot).load(snapshot, self.settings)
        self._metrics.model_load_seconds.set(time.monotonic() - started)
        if self.settings.warmup:
            self.reason = "warming up"
            warm_started = time.monotonic()
            for batch in pipeline.warmup_batches(self.settings.compiles, self.settings.max_batch_size):
                pipeline.run_batch(batch)
            self._metrics.warmup_seconds.set(time.monotonic() - warm_started)
        if self.settings.compiles:
            self.recompiles.install()  # from now on a compilation is one warm-up missed
            if self.settings.warmup and pipeline.compiled_sizes:
                # Warm-up ran every shape of a request at these sizes: from now on nothing compiles,
                # a call at another size runs eagerly and is counted (pipelines.recompiles).
                self.uncompiled.install(pipeline.compiled_sizes)
                pipeline.uncompiled = self.uncompiled
        self.pipeline = pipeline
        self.state, self.reason = ModelState.OK, "ready"
        self._metrics.ready.set(1)
        log.info("ready in %.1fs", time.monotonic() - started)
