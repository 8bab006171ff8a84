"""The FastAPI application: one task's route plus health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from kubediffusers.runner import __version__
from kubediffusers.runner.auth import require_token
from kubediffusers.runner.compat import livepeer
from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import install_error_handlers
from kubediffusers.runner.middleware import BodyLimits, RequestMetrics, TokenFirst
from kubediffusers.runner.routes import health, jobs, task_routers
from kubediffusers.runner.routes import livepeer as livepeer_routes
from kubediffusers.runner.routes.pico import health_router as pico_health
from kubediffusers.runner.settings import Compatibility, RunnerSettings, Task

DESCRIPTION = """\
HTTP API of one kubediffusers runner. A runner serves one task; only that
task's route exists. Responses follow livepeer ai-runner's shapes. Errors are
`{"detail": {"msg": "..."}}`, a 422 FastAPI's `{"detail": [{"loc", "msg", "type"}]}`
(at most 20 items). PICO's routes (/api/v1/...) answer in PICO's shapes; see
docs/runner-api.md for the clients of livepeer ai-runner and PICO.
"""

# Headers a browser script may read from an answer (CORS).
EXPOSED_HEADERS = ["Retry-After", "Location", "Preference-Applied", "X-Seed", "X-Nsfw", "X-Frames"]


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
            context.model.close()
            context.executor.shutdown(wait=False, cancel_futures=True)

    # Swagger UI and ReDoc load their scripts from a public CDN: not on a runner that guards its routes.
    # /openapi.json stays, for clients and generators.
    guarded_docs = settings.auth_token is not None
    app = FastAPI(
        title="kubediffusers runner",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None if guarded_docs else "/docs",
        redoc_url=None if guarded_docs else "/redoc",
        # FastAPI's OpenTelemetry hooks look up the global providers on every request; the
        # runner's metrics are Prometheus (/metrics) and the image has no OpenTelemetry SDK.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.context = context
    install_error_handlers(app)
    # The task's routes (native and compatibility) and its async jobs; the token guards them.
    guarded = [router for task in tasks or [settings.task] for router in task_routers(task)] + [jobs.router]
    # Without a token nothing is guarded: no security dependency to solve on every request
    # (two of a generation route's five), and /openapi.json claims no scheme it would not apply.
    guard = [Depends(require_token)] if settings.auth_token is not None else []
    for router in guarded:
        app.include_router(router, dependencies=guard)
    app.include_router(health.router)
    app.include_router(livepeer_routes.router)
    app.include_router(pico_health)
    app.add_middleware(RequestMetrics, metrics=context.metrics)
    if settings.auth_token is not None:
        app.add_middleware(TokenFirst, token=settings.auth_token.get_secret_value(), guarded=[route for router in guarded for route in router.routes])
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes, timeout_seconds=settings.body_timeout_seconds)
    if settings.compatibility is Compatibility.LIVEPEER:
        app.add_middleware(livepeer.DeclaredStatuses, paths=livepeer.livepeer_paths())
    if settings.cors_allowed_origins:
        # Outermost: a preflight is answered before auth or body limits see it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Prefer"],
            expose_headers=EXPOSED_HEADERS,
        )
    return app
