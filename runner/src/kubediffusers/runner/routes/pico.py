"""PICO's routes, generated from the registry rows' PICO routes for the served task.

Every route goes through the native path (``generate.prepare``: limits,
uploads, the model's preparation; then the queue, batching, metrics and the
token), answering in PICO's shapes (``compat.pico``) with PICO's errors
(``ErrorStyle.PICO``). The routes of tasks not served do not exist (404).

No ``from __future__ import annotations``: FastAPI reads the endpoints'
annotations, made inside ``pico_router``, as objects.
"""

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from kubediffusers.runner.compat import pico
from kubediffusers.runner.context import Context
from kubediffusers.runner.errors import ErrorStyle
from kubediffusers.runner.routes.bodies import styled_route
from kubediffusers.runner.routes.delivery import OutputFormat, respond
from kubediffusers.runner.routes.docs import ERROR_RESPONSES
from kubediffusers.runner.routes.generate import prepare
from kubediffusers.runner.tasks import Api, CompatRoute, TaskSpec


class PicoHealth(BaseModel):
    Status: Literal["Idle", "Busy"]


class PicoImage(BaseModel):
    Name: str
    Image: str
    Attributes: dict[str, Any]


class PicoResponse(BaseModel):
    ElapsedSeconds: float
    Images: list[PicoImage]


class PicoError(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": PicoError, "description": text}
    for code, text in {
        400: "Input outside the runner's limits, a Model other than the served one, or an unreadable image",
        401: "Missing or wrong bearer token",
        500: "Unexpected failure",
        503: "GPU_BUSY: the queue is full; or the model is not ready (see Retry-After)",
        504: "Not finished within the request timeout",
    }.items()
}
_ERRORS[422] = ERROR_RESPONSES[422] | {"description": "The body does not match PICO's request model (FastAPI's list, as PICO answered)"}

health_router = APIRouter(tags=["pico"], route_class=styled_route(ErrorStyle.PICO))


@health_router.get("/api/v1/health", summary="PICO's health: Busy while a generation runs", operation_id="pico_health")
async def pico_health(ctx: Context) -> PicoHealth:
    return PicoHealth(Status="Busy" if ctx.worker.busy else "Idle")


def _route(router: APIRouter, spec: TaskSpec, route: CompatRoute) -> None:
    body: Any = pico.request_model(spec.task, route)

    async def endpoint(request_body: body, request: Request, ctx: Context) -> Response:
        started = time.monotonic()
        values = pico.clamped(request_body)
        params = pico.to_params(spec.params, request_body, values, ctx.settings.max_upload_bytes)
        work = await prepare(spec, params, ctx)
        precision = str(getattr(ctx.model.require_ready().pipe, "dtype", ""))

        def body_of(results: list[Any]) -> dict[str, Any]:
            return pico.answer(spec.task, route, request_body, values, ctx.settings.model_id, precision, results, time.monotonic() - started)

        output = OutputFormat(
            body=lambda results, _encoding: body_of(results),  # PICO's images are PNG, as PICO wrote them
            response=lambda _, results, _encoding: JSONResponse(body_of(results)),
            from_body=lambda _, body, _fps: JSONResponse(body),  # PICO has no async jobs; kept for the type
        )
        return await respond(ctx, request, work, False, output)

    router.add_api_route(
        route.path,
        endpoint,
        methods=["POST"],
        summary=f"PICO's {route.name}",
        response_model=None,
        responses={200: {"model": PicoResponse, "description": "PICO's answer: the images as base64 PNG with their attributes"}, **_ERRORS},
        operation_id="pico_" + route.path.rsplit("/", 1)[-1].replace("-", "_"),
    )


def pico_router(spec: TaskSpec) -> APIRouter:
    router = APIRouter(tags=["pico"], route_class=styled_route(ErrorStyle.PICO))
    for route in spec.compat_routes(Api.PICO):
        _route(router, spec, route)
    return router
