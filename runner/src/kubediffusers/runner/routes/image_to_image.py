from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.routes.common import (
    IMAGE_RESPONSES,
    GenerationParams,
    RespondAsync,
    check_strength_runs_a_step,
    fit_image,
    new_work,
    read_image,
    respond,
)

router = APIRouter(tags=["generate"])


class ImageToImageParams(GenerationParams):
    """Transform an uploaded image guided by a prompt."""

    image: Annotated[UploadFile, File(description="The image to transform (PNG, JPEG, WebP, ...).")]
    strength: Annotated[
        float,
        Field(gt=0, le=1, allow_inf_nan=False, description="How much to change the image: 0 keeps it, 1 ignores it. Only strength x steps steps run."),
    ] = 0.8
    height: Annotated[int | None, Field(ge=8, le=8192, description="Resize the input to this height first (a multiple of 8). Default: the input's.")] = None
    width: Annotated[int | None, Field(ge=8, le=8192, description="Resize the input to this width first (a multiple of 8). Default: the input's.")] = None


@router.post(
    "/image-to-image",
    summary="Image to image",
    response_model=None,
    responses=IMAGE_RESPONSES,
    operation_id="image_to_image",
)
async def image_to_image(
    params: Annotated[ImageToImageParams, Form(media_type="multipart/form-data")],
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    params.check_limits(ctx)
    check_strength_runs_a_step(params.strength, params.num_inference_steps)
    picture = fit_image(await read_image(params.image, "image", ctx), params.height, params.width, ctx)
    return await respond(ctx, request, new_work(params, image=picture), respond_async)
