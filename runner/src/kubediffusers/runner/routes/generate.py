"""The generation routes, built from the task registry: one endpoint body for every task.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
annotations to build the request schema, and annotations made inside
``task_router`` must be objects, not strings it would look up in this
module's globals.
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from kubediffusers.runner import schedulers
from kubediffusers.runner.compat import livepeer
from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.errors import ErrorStyle
from kubediffusers.runner.inputs import read_image
from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.routes.bodies import styled_route
from kubediffusers.runner.routes.delivery import FORMATS, AsyncQuery, PreferHeader, prefers_async, respond
from kubediffusers.runner.routes.docs import RESPONSES
from kubediffusers.runner.settings import Compatibility
from kubediffusers.runner.tasks import TaskSpec
from kubediffusers.runner.types import Work


async def prepare(spec: TaskSpec, params: TaskParams, ctx: RunnerContext) -> Work:
    """Every task's request, from any API's route: runner limits, uploads, the model's preparation."""
    pipeline = ctx.model.require_ready()
    # The limits see the request as this checkpoint runs it: its family's defaults decide
    # (e.g. Kontext runs the whole schedule, so strength x steps does not apply); prepare applies them again.
    pipeline.with_family_defaults(params, ctx.settings).check_limits(ctx.settings)
    schedulers.check(pipeline, params.scheduler)
    images = {name: await read_image(upload, name, ctx.settings) for name, upload in params.uploads().items()}
    if not images:  # a prompt and numbers: less work than the two thread hand-offs would cost
        return pipeline.prepare(params, images, ctx.settings)
    # Fitting resizes uploads: CPU work, off the event loop.
    return await asyncio.to_thread(pipeline.prepare, params, images, ctx.settings)


async def handle(spec: TaskSpec, params: TaskParams, request: Request, ctx: RunnerContext, respond_async: bool) -> Response:
    """A native route's request (livepeer's clients call these: its defaults apply under compatibility livepeer)."""
    if ctx.settings.compatibility is Compatibility.LIVEPEER:
        livepeer.apply_defaults(spec, params)
    work = await prepare(spec, params, ctx)
    return await respond(ctx, request, work, respond_async, FORMATS[spec.output])


def task_router(spec: TaskSpec) -> APIRouter:
    """The route of one registry row: a JSON body, or multipart/form-data when it
    uploads files; also at livepeer's trailing-slash alias where livepeer has the task."""
    body: Any = Annotated[spec.params, Form(media_type="multipart/form-data")] if spec.uploads else spec.params

    async def endpoint(params: body, request: Request, respond_async: AsyncQuery = False, prefer: PreferHeader = None) -> Response:
        # The context from the request, not the Context dependency: one dependency less to solve per request.
        return await handle(spec, params, request, get_context(request), respond_async or prefers_async(prefer))

    router = APIRouter(tags=["generate"], route_class=styled_route(ErrorStyle.NATIVE))
    router.add_api_route(
        spec.path,
        endpoint,
        methods=["POST"],
        summary=spec.summary,
        response_model=None,
        responses=RESPONSES[spec.output],
        operation_id=spec.operation_id,
    )
    for alias in livepeer.aliases(spec):
        router.add_api_route(alias, endpoint, methods=["POST"], response_model=None, include_in_schema=False)
    return router
