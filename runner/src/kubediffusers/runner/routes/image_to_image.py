from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.routes.common import (
    IMAGE_RESPONSES,
    GenerationParams,
    RespondAsync,
    check_size,
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
    height: Annotated[
        int | None, Field(ge=8, le=8192, description="Resize the input to this height first (a multiple of 8). Default: the input's.")
    ] = None
    width: Annotated[
        int | None, Field(ge=8, le=8192, description="Resize the input to this width first (a multiple of 8). Default: the input's.")
    ] = None


def fit_image(image, params: ImageToImageParams, ctx: RunnerContext):  # type: ignore[no-untyped-def]
    """Resize to the requested size, or keep the input's size if it is within limits."""
    if params.height or params.width:
        width = params.width or image.width * params.height // image.height // 8 * 8
        height = params.height or image.height * params.width // image.width // 8 * 8
        check_size(height, width, ctx)
        return image.resize((width, height))
    if image.width * image.height > ctx.settings.max_pixels:
        raise InvalidInput(
            f"the image is {image.width}x{image.height}, more than the {ctx.settings.max_pixels} pixels this runner "
            "generates; pass width and height to resize it"
        )
    # The VAE needs sides that are multiples of 8.
    width, height = max(8, image.width // 8 * 8), max(8, image.height // 8 * 8)
    return image if (width, height) == image.size else image.resize((width, height))


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
    if int(params.num_inference_steps * params.strength) < 1:
        raise InvalidInput("strength x num_inference_steps must be at least 1 so that one step runs")
    picture = fit_image(await read_image(params.image, "image", ctx), params, ctx)
    return await respond(ctx, request, new_work(params, image=picture), respond_async)
