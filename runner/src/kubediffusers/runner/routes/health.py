"""Health, readiness, liveness and metrics: always open, answered while a
generation runs because none of them touches the inference thread."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from kubediffusers.runner.context import Context, RunnerContext
from kubediffusers.runner.errors import NotReady, error_response
from kubediffusers.runner.model import ModelState

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: ModelState = Field(description="LOADING while the model loads and warms up, OK when serving, ERROR when it cannot.")
    activity: Literal["Idle", "Busy"] = Field(description="Busy while the worker runs a generation.")
    queue_depth: int = Field(description="Requests waiting for the worker.")
    task: str
    model: str
    revision: str | None = Field(description="Commit of the loaded checkpoint.")
    detail: str = Field(description="Why the runner is not ready, or 'ready'.")


def health_of(ctx: RunnerContext) -> Health:
    return Health(
        status=ctx.model.state,
        activity="Busy" if ctx.worker.busy else "Idle",
        queue_depth=ctx.worker.depth,
        task=ctx.settings.task.value,
        model=ctx.settings.model_id,
        revision=ctx.model.revision,
        detail=ctx.model.reason,
    )


@router.get("/health", summary="State, Idle/Busy and queue depth")
async def health(ctx: Context) -> Health:
    return health_of(ctx)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Readiness: model loaded and warmed up",
    responses={503: {"description": "Not ready; detail.msg says why"}},
)
async def readyz(ctx: Context) -> Response:
    if ctx.worker.draining is not None:
        # Unready at once on SIGTERM, so the Service stops sending work while the accepted work finishes.
        return error_response(503, ctx.worker.draining, retry_after=NotReady.retry_after, status="DRAINING")
    if ctx.model.ready:
        return JSONResponse({"status": "ready"})
    return error_response(503, ctx.model.reason, retry_after=NotReady.retry_after, status=ctx.model.state.value)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(ctx: Context) -> Response:
    ctx.metrics.queue_depth.set(ctx.worker.depth)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
