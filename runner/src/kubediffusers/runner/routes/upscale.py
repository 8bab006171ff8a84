from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.pipelines.upscale import UpscalePipeline
from kubediffusers.runner.routes.common import (
    IMAGE_RESPONSES,
    GenerationParams,
    RespondAsync,
    fit_image,
    new_work,
    read_image,
    respond,
)

router = APIRouter(tags=["generate"])


class UpscaleParams(GenerationParams):
    """Upscale an image four times per side (the SD x4 upscaler), guided by a prompt describing it."""

    image: Annotated[
        UploadFile,
        File(description="The image to upscale. Its sides are trimmed to multiples of 8; the output is 4x larger per side."),
    ]
    noise_level: Annotated[
        int,
        Field(
            ge=0,
            le=350,
            description="Noise added to the input first: more lets the model invent detail, less stays faithful. At most the model's max_noise_level (350).",
        ),
    ] = 20


@router.post(
    "/upscale",
    summary="Upscale x4",
    response_model=None,
    responses=IMAGE_RESPONSES,
    operation_id="upscale",
)
async def upscale(
    params: Annotated[UpscaleParams, Form(media_type="multipart/form-data")],
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    params.check_limits(ctx)
    pipeline = cast(UpscalePipeline, ctx.model.require_ready())
    if params.noise_level > pipeline.max_noise_level:
        raise InvalidInput(f"noise_level is {params.noise_level}; this model allows at most {pipeline.max_noise_level}")
    image = await read_image(params.image, "image", ctx)
    factor, limit = pipeline.factor, ctx.settings.max_pixels
    out_width, out_height = image.width // 8 * 8 * factor, image.height // 8 * 8 * factor
    if out_width * out_height > limit:
        raise InvalidInput(
            f"upscaling {image.width}x{image.height} gives {out_width}x{out_height} = {out_width * out_height} pixels; "
            f"this runner allows at most {limit}, so send an image of at most {limit // factor**2} pixels"
        )
    picture = fit_image(image, None, None, ctx)
    return await respond(ctx, request, new_work(params, image=picture), respond_async)
