from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.routes.common import (
    IMAGE_RESPONSES,
    Height,
    NumImages,
    RespondAsync,
    Seed,
    Steps,
    Width,
    check_common_limits,
    check_size,
    new_work,
    read_image,
    respond,
)

router = APIRouter(tags=["generate"])


class ImageVariationParams(BaseModel):
    """Variations of an image, without a prompt: the model is conditioned on the image's CLIP embedding."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[UploadFile, File(description="The image to make variations of (PNG, JPEG, WebP, ...).")]
    guidance_scale: Annotated[
        float,
        Field(ge=0, le=50, allow_inf_nan=False, description="How closely the variations follow the image (1 or less disables guidance)."),
    ] = 3.0
    num_inference_steps: Steps = 50
    seed: Seed = None
    num_images_per_prompt: NumImages = 1
    height: Height = None
    width: Width = None


@router.post(
    "/image-variation",
    summary="Image variation",
    response_model=None,
    responses=IMAGE_RESPONSES,
    operation_id="image_variation",
)
async def image_variation(
    params: Annotated[ImageVariationParams, Form(media_type="multipart/form-data")],
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    check_common_limits(params, ctx)
    check_size(params.height, params.width, ctx)
    # The CLIP feature extractor resizes the image itself; any readable image within the upload limits will do.
    image = await read_image(params.image, "image", ctx)
    return await respond(ctx, request, new_work(params, image=image), respond_async)
