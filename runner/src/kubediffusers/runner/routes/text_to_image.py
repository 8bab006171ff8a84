from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.routes.common import IMAGE_RESPONSES, GenerationParams, RespondAsync, check_size, new_work, respond

router = APIRouter(tags=["generate"])


class TextToImageParams(GenerationParams):
    """Generate images from a text prompt."""

    height: Annotated[int | None, Field(ge=8, le=8192, description="Height in pixels, a multiple of 8. Default: the model's native size.")] = None
    width: Annotated[int | None, Field(ge=8, le=8192, description="Width in pixels, a multiple of 8. Default: the model's native size.")] = None


@router.post(
    "/text-to-image",
    summary="Text to image",
    response_model=None,
    responses=IMAGE_RESPONSES,
    operation_id="text_to_image",
)
async def text_to_image(
    params: TextToImageParams,
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    params.check_limits(ctx)
    height, width = params.height, params.width
    if (height is None) != (width is None):
        # One side given: the other is the model's native one, and the pixel limit is
        # on the pair (height=8192 alone was a 8192x512 image past any limit: minutes of CPU, or an OOM).
        native_height, native_width = ctx.model.require_ready().default_size()
        height, width = height or native_height, width or native_width
    check_size(height, width, ctx)
    return await respond(ctx, request, new_work(params), respond_async)
