"""What the generation routes share: common parameters, limits, the path
through the queue, and the response shapes of livepeer's ai-runner."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import InvalidInput, PayloadTooLarge
from kubediffusers.runner.images import decode_image, encode_png, png_data_url
from kubediffusers.runner.pipelines.base import GeneratedImage, Work
from kubediffusers.runner.worker import Job

MAX_SEED = 2**63 - 1 - 64  # torch seeds are 64-bit; leave room for seed + i


class GenerationParams(BaseModel):
    """Parameters every image-generating task shares."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=4000, description="What to generate.")]
    negative_prompt: Annotated[str, Field(max_length=4000, description="What to steer away from.")] = ""
    guidance_scale: Annotated[
        float,
        Field(ge=0, le=50, allow_inf_nan=False, description="How strongly the prompt guides the image (0 or 1 disables classifier-free guidance; sd-turbo wants 0)."),
    ] = 7.5
    num_inference_steps: Annotated[
        int, Field(ge=1, le=1000, description="Denoising steps: more is slower and finer (sd-turbo: 1-4). The runner's limit applies.")
    ] = 50
    seed: Annotated[
        int | None, Field(ge=0, le=MAX_SEED, description="Seed of the first image; image i uses seed + i. Random when unset.")
    ] = None
    num_images_per_prompt: Annotated[
        int, Field(ge=1, le=64, description="How many images to generate. The runner's limit applies.")
    ] = 1

    def check_limits(self, ctx: RunnerContext) -> None:
        s = ctx.settings
        if "num_inference_steps" not in self.model_fields_set:
            # The default must never break a runner configured with fewer steps.
            self.num_inference_steps = min(self.num_inference_steps, s.max_steps)
        if self.num_inference_steps > s.max_steps:
            raise InvalidInput(f"num_inference_steps is {self.num_inference_steps}; this runner allows at most {s.max_steps}")
        if self.num_images_per_prompt > s.max_images_per_request:
            raise InvalidInput(
                f"num_images_per_prompt is {self.num_images_per_prompt}; this runner allows at most {s.max_images_per_request}"
            )


def check_size(height: int | None, width: int | None, ctx: RunnerContext) -> None:
    for name, value in (("height", height), ("width", width)):
        if value is not None and value % 8:
            raise InvalidInput(f"{name} must be a multiple of 8, got {value}")
    if height is not None and width is not None and height * width > ctx.settings.max_pixels:
        raise InvalidInput(
            f"{width}x{height} is {width * height} pixels; this runner allows at most {ctx.settings.max_pixels}"
        )


async def read_image(upload: UploadFile, field: str, ctx: RunnerContext) -> Any:
    data = await upload.read(ctx.settings.max_upload_bytes + 1)
    if len(data) > ctx.settings.max_upload_bytes:
        raise PayloadTooLarge(f"{field}: the upload is larger than {ctx.settings.max_upload_bytes} bytes")
    return decode_image(data, field=field, max_pixels=ctx.settings.max_upload_pixels)


def new_work(params: GenerationParams, **images: Any) -> Work:
    seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    return Work(params=params, seed=seed, num_images=params.num_images_per_prompt, images=images)


async def generate(ctx: RunnerContext, request: Request, work: Work) -> list[GeneratedImage]:
    """Queue the work, wait for its turn and its result within the request timeout."""
    pipeline = ctx.model.require_ready()
    job: Job[list[GeneratedImage]] = Job(
        run=lambda on_step: pipeline.run(work, on_step), disconnected=request.is_disconnected
    )
    ctx.worker.submit(job)
    images = await ctx.worker.result(job, ctx.settings.request_timeout_seconds)
    ctx.metrics.images.labels(ctx.settings.task.value).inc(len(images))
    return images


def wants_png(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept


def image_response(request: Request, images: list[GeneratedImage]) -> Response:
    """JSON with data URLs (ai-runner's shape), or raw PNG when asked for one image."""
    if wants_png(request):
        if len(images) != 1:
            raise InvalidInput("Accept: image/png returns a single image; ask for num_images_per_prompt=1")
        only = images[0]
        return Response(
            encode_png(only.image),
            media_type="image/png",
            headers={"X-Seed": str(only.seed), "X-Nsfw": str(only.nsfw).lower()},
        )
    return JSONResponse(
        {"images": [{"url": png_data_url(encode_png(i.image)), "seed": i.seed, "nsfw": i.nsfw} for i in images]}
    )


class Media(BaseModel):
    url: str = Field(description="The image as a data URL (data:image/png;base64,...).")
    seed: int = Field(description="Seed that reproduces this image alone.")
    nsfw: bool = Field(description="Whether the safety checker flagged the image (false when none is loaded).")


class ImageResponse(BaseModel):
    images: list[Media]


class ErrorDetail(BaseModel):
    msg: str


class HTTPError(BaseModel):
    detail: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": HTTPError, "description": text}
    for code, text in {
        400: "Input outside the limits or an unreadable upload",
        401: "Missing or wrong bearer token",
        413: "Request body too large",
        422: "Request does not match the schema",
        500: "Unexpected failure",
        503: "Model not ready, queue full or GPU out of memory (see Retry-After)",
        504: "Not finished within the request timeout",
    }.items()
}

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImageResponse,
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "Generated images; raw PNG with 'Accept: image/png' for one image.",
    },
    **ERROR_RESPONSES,
}
