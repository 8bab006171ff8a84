"""The drain at shutdown: what the runner does between SIGTERM and exiting.

Kubernetes sends SIGTERM when a pod is to go (a rollout, a scale-down, a node
drain). The runner then turns unready at once (``/readyz`` 503, so the
Service stops routing to it), refuses new work with 503 and Retry-After (a
client retries on another replica), and finishes what it accepted, running
and queued, sync and async, within the drain deadline. Whatever is left then
fails with ``ShuttingDown``, a clear 503, instead of vanishing with the process.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import ShuttingDown

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


async def drain(ctx: RunnerContext, seconds: float) -> bool:
    """Refuse new work, wait up to ``seconds`` for the accepted work; True when all of it finished."""
    started = time.monotonic()
    ctx.worker.draining = f"the runner is shutting down (draining for at most {seconds:g} seconds); retry on another replica"
    log.info("draining: new work is refused; finishing %d running and %d queued requests within %gs", len(ctx.worker.running), ctx.worker.depth, seconds)
    deadline = started + seconds
    while not ctx.worker.idle and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
    # Finished async jobs render their results (PNG encoding) before they count as done.
    waiters = ctx.jobs.unfinished_waiters()
    if waiters and (left := deadline - time.monotonic()) > 0:
        await asyncio.wait(waiters, timeout=left)
    finished = ctx.worker.idle and not ctx.jobs.unfinished_waiters()
    if not finished:
        failed = ctx.worker.fail_all(
            ShuttingDown(f"the runner shut down before this request finished: its drain deadline of {seconds:g} seconds passed; retry")
        )
        log.warning("drain deadline of %gs passed: %d requests failed", seconds, failed)
    log.info("drained in %.1fs", time.monotonic() - started)
    return finished
