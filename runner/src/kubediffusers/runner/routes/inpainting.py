from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from pydantic import Field

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.routes.common import (
    IMAGE_RESPONSES,
    GenerationParams,
    Height,
    RespondAsync,
    Width,
    check_strength_runs_a_step,
    fit_image,
    new_work,
    read_image,
    respond,
)

router = APIRouter(tags=["generate"])

# Masks drawn on a scaled preview are accepted if their shape matches this closely.
ASPECT_TOLERANCE = 0.01


class InpaintingParams(GenerationParams):
    """Repaint the masked part of an image, guided by a prompt."""

    image: Annotated[UploadFile, File(description="The image to edit (PNG, JPEG, WebP, ...).")]
    mask_image: Annotated[
        UploadFile,
        File(description="White where to repaint, black where to keep. The same size as image, or the same aspect ratio (it is then scaled to the image)."),
    ]
    strength: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            allow_inf_nan=False,
            description="How much the masked area changes: 1 repaints it from noise, less keeps more of the original. Only strength x steps steps run.",
        ),
    ] = 1.0
    height: Annotated[Height, Field(description="Resize image and mask to this height first (a multiple of 8). Default: the image's.")] = None
    width: Annotated[Width, Field(description="Resize image and mask to this width first (a multiple of 8). Default: the image's.")] = None


def match_mask(mask: Image.Image, image: Image.Image) -> Image.Image:
    """The mask as one channel at the image's size, or 400 if it cannot belong to the image."""
    if mask.size != image.size:
        image_ratio, mask_ratio = image.width / image.height, mask.width / mask.height
        if abs(mask_ratio - image_ratio) > ASPECT_TOLERANCE * image_ratio:
            raise InvalidInput(
                f"mask_image is {mask.width}x{mask.height} but image is {image.width}x{image.height}: "
                "the mask must have the image's size or at least its aspect ratio"
            )
        # Nearest keeps the mask's edges hard instead of inventing grey borders.
        mask = mask.resize(image.size, Image.Resampling.NEAREST)
    return mask.convert("L")


@router.post(
    "/inpainting",
    summary="Inpainting",
    response_model=None,
    responses=IMAGE_RESPONSES,
    operation_id="inpainting",
)
async def inpainting(
    params: Annotated[InpaintingParams, Form(media_type="multipart/form-data")],
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    params.check_limits(ctx)
    check_strength_runs_a_step(params.strength, params.num_inference_steps)
    image = await read_image(params.image, "image", ctx)
    mask = await read_image(params.mask_image, "mask_image", ctx)
    mask = match_mask(mask, image)
    picture = fit_image(image, params.height, params.width, ctx)
    if mask.size != picture.size:
        mask = mask.resize(picture.size, Image.Resampling.NEAREST)
    return await respond(ctx, request, new_work(params, image=picture, mask_image=mask), respond_async)
