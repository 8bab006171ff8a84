"""The FastAPI application: one task's route plus health and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response

from kubediffusers.runner import __version__
from kubediffusers.runner.auth import require_token
from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import install_error_handlers
from kubediffusers.runner.limits import BodySizeLimit
from kubediffusers.runner.routes import health, task_router
from kubediffusers.runner.settings import RunnerSettings, Task

DESCRIPTION = """\
HTTP API of one kubediffusers runner. A runner serves one task; only that
task's route exists. Responses follow livepeer ai-runner's shapes. Errors are
`{"detail": {"msg": "..."}}`.
"""


def create_app(settings: RunnerSettings, *, tasks: list[Task] | None = None, load_model: bool = True) -> FastAPI:
    """Build the app for ``settings.task``. ``tasks`` mounts other routes too
    (only used to write the complete OpenAPI document)."""
    context = RunnerContext.create(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context.worker.start()
        loader = asyncio.create_task(context.model.load()) if load_model else None
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            await context.worker.stop()
            context.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="kubediffusers runner", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.context = context
    install_error_handlers(app)
    app.include_router(health.router)
    for task in tasks or [settings.task]:
        app.include_router(task_router(task), dependencies=[Depends(require_token)])
    _count_requests(app, context)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app


def _count_requests(app: FastAPI, context: RunnerContext) -> None:
    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            # Label by route template, never the raw path: unknown paths must not grow the series.
            path = getattr(route, "path", "unmatched")
            context.metrics.requests.labels(path, request.method, str(status)).inc()
            context.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
