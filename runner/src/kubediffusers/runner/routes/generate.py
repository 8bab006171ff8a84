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

from kubediffusers.runner.context import Context
from kubediffusers.runner.inputs import read_image
from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.routes.delivery import FORMATS, RespondAsync, respond
from kubediffusers.runner.routes.docs import RESPONSES
from kubediffusers.runner.tasks import TaskSpec


async def handle(spec: TaskSpec, params: TaskParams, request: Request, ctx: Context, respond_async: bool) -> Response:
    """Every task's request: runner limits, uploads, the model's preparation, the answer."""
    params.check_limits(ctx.settings)
    images = {name: await read_image(upload, name, ctx.settings) for name, upload in params.uploads().items()}
    # Fitting resizes uploads: CPU work, off the event loop.
    work = await asyncio.to_thread(ctx.model.require_ready().prepare, params, images, ctx.settings)
    return await respond(ctx, request, work, respond_async, FORMATS[spec.output])


def task_router(spec: TaskSpec) -> APIRouter:
    """The route of one registry row: a JSON body, or multipart/form-data when it uploads files."""
    body: Any = Annotated[spec.params, Form(media_type="multipart/form-data")] if spec.uploads else spec.params

    async def endpoint(params: body, request: Request, ctx: Context, respond_async: RespondAsync) -> Response:
        return await handle(spec, params, request, ctx, respond_async)

    router = APIRouter(tags=["generate"])
    router.add_api_route(
        spec.path,
        endpoint,
        methods=["POST"],
        summary=spec.summary,
        response_model=None,
        responses=RESPONSES[spec.output],
        operation_id=spec.operation_id,
    )
    return router
