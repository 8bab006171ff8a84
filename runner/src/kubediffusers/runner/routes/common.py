"""What the generation routes share: common parameters, limits, the path
through the queue, and the response shapes of livepeer's ai-runner."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import InvalidInput, PayloadTooLarge
from kubediffusers.runner.images import decode_image, encode_png, png_data_url
from kubediffusers.runner.jobs import JobState, get_jobs, job_state
from kubediffusers.runner.pipelines.base import GeneratedImage, Work
from kubediffusers.runner.worker import Disconnected, Job

MAX_SEED = 2**63 - 1 - 64  # torch seeds are 64-bit; leave room for seed + i


# Field types shared by the task parameter models.
Steps = Annotated[int, Field(ge=1, le=1000, description="Denoising steps: more is slower and finer. The runner's limit applies.")]
Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED, description="Seed of the first image; image i uses seed + i. Random when unset.")]
NumImages = Annotated[int, Field(ge=1, le=64, description="How many images to generate. The runner's limit applies.")]
Height = Annotated[int | None, Field(ge=8, le=8192, description="Height in pixels, a multiple of 8. Default: the model's native size.")]
Width = Annotated[int | None, Field(ge=8, le=8192, description="Width in pixels, a multiple of 8. Default: the model's native size.")]


def check_common_limits(params: BaseModel, ctx: RunnerContext) -> None:
    """Runner limits on num_inference_steps and num_images_per_prompt, for any params model that has them."""
    s = ctx.settings
    steps = getattr(params, "num_inference_steps", None)
    if steps is not None:
        if "num_inference_steps" not in params.model_fields_set:
            # The default must never break a runner configured with fewer steps.
            steps = min(steps, s.max_steps)
            params.num_inference_steps = steps  # type: ignore[attr-defined]
        if steps > s.max_steps:
            raise InvalidInput(f"num_inference_steps is {steps}; this runner allows at most {s.max_steps}")
    count = getattr(params, "num_images_per_prompt", None)
    if count is not None and count > s.max_images_per_request:
        raise InvalidInput(f"num_images_per_prompt is {count}; this runner allows at most {s.max_images_per_request}")


class GenerationParams(BaseModel):
    """Parameters every image-generating task shares."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=4000, description="What to generate.")]
    negative_prompt: Annotated[str, Field(max_length=4000, description="What to steer away from.")] = ""
    guidance_scale: Annotated[
        float,
        Field(
            ge=0,
            le=50,
            allow_inf_nan=False,
            description="How strongly the prompt guides the image (0 or 1 disables classifier-free guidance; sd-turbo wants 0).",
        ),
    ] = 7.5
    num_inference_steps: Annotated[
        int, Field(ge=1, le=1000, description="Denoising steps: more is slower and finer (sd-turbo: 1-4). The runner's limit applies.")
    ] = 50
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED, description="Seed of the first image; image i uses seed + i. Random when unset.")] = None
    num_images_per_prompt: Annotated[int, Field(ge=1, le=64, description="How many images to generate. The runner's limit applies.")] = 1

    def check_limits(self, ctx: RunnerContext) -> None:
        check_common_limits(self, ctx)


def check_size(height: int | None, width: int | None, ctx: RunnerContext) -> None:
    for name, value in (("height", height), ("width", width)):
        if value is not None and value % 8:
            raise InvalidInput(f"{name} must be a multiple of 8, got {value}")
    if height is not None and width is not None and height * width > ctx.settings.max_pixels:
        raise InvalidInput(f"{width}x{height} is {width * height} pixels; this runner allows at most {ctx.settings.max_pixels}")


async def read_image(upload: UploadFile, field: str, ctx: RunnerContext) -> Any:
    data = await upload.read(ctx.settings.max_upload_bytes + 1)
    if len(data) > ctx.settings.max_upload_bytes:
        raise PayloadTooLarge(f"{field}: the upload is larger than {ctx.settings.max_upload_bytes} bytes")
    return decode_image(data, field=field, max_pixels=ctx.settings.max_upload_pixels)


def check_strength_runs_a_step(strength: float, steps: int) -> None:
    # img2img-style pipelines run only strength x steps of the schedule.
    if int(steps * strength) < 1:
        raise InvalidInput("strength x num_inference_steps must be at least 1 so that one step runs")


def fit_image(image: Image.Image, height: int | None, width: int | None, ctx: RunnerContext, *, multiple: int = 8, field: str = "image") -> Image.Image:
    """Resize to the requested size (one side given keeps the aspect ratio), or
    keep the input's size, trimmed to a multiple of ``multiple``, if it is within limits."""
    if height or width:
        width = width or max(multiple, image.width * height // image.height // multiple * multiple)  # type: ignore[operator]
        height = height or max(multiple, image.height * width // image.width // multiple * multiple)
        for name, value in (("height", height), ("width", width)):
            if value % multiple:
                raise InvalidInput(f"{name} must be a multiple of {multiple} for this model, got {value}")
        check_size(height, width, ctx)
        return image.resize((width, height))
    if image.width * image.height > ctx.settings.max_pixels:
        raise InvalidInput(
            f"the {field} is {image.width}x{image.height}, more than the {ctx.settings.max_pixels} pixels this runner "
            "generates; pass width and height to resize it"
        )
    size = (max(multiple, image.width // multiple * multiple), max(multiple, image.height // multiple * multiple))
    return image if size == image.size else image.resize(size)


def new_work(params: BaseModel, **images: Any) -> Work:
    seed = getattr(params, "seed", None)
    seed = seed if seed is not None else secrets.randbelow(2**32)
    count = getattr(params, "num_images_per_prompt", 1)
    return Work(params=params, seed=seed, num_images=count, images=images)


def new_job(ctx: RunnerContext, work: Work, disconnected: Disconnected | None = None) -> Job[list[Any]]:
    pipeline = ctx.model.require_ready()
    return Job(
        work=work,
        execute=pipeline.run_batch,
        batch_key=pipeline.batch_key(work),
        weight=work.num_images,
        disconnected=disconnected,
    )


async def generate(ctx: RunnerContext, request: Request, work: Work) -> list[Any]:
    """Queue the work, wait for its turn and its result within the request timeout."""
    job = new_job(ctx, work, disconnected=request.is_disconnected)
    ctx.worker.submit(job)
    results = await ctx.worker.result(job, ctx.settings.request_timeout_seconds)
    count_outputs(ctx, results)
    return results


def count_outputs(ctx: RunnerContext, results: list[Any]) -> None:
    # A video counts its frames: the metric is images (or video frames) generated.
    produced = sum(len(getattr(item, "frames", None) or [item]) for item in results)
    ctx.metrics.images.labels(ctx.settings.task.value).inc(produced)


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
    return JSONResponse(images_body(images))


def images_body(images: list[GeneratedImage]) -> dict[str, Any]:
    return {"images": [{"url": png_data_url(encode_png(i.image)), "seed": i.seed, "nsfw": i.nsfw} for i in images]}


# -- answering now, or later as an async job ---------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """How a task's results become an answer."""

    body: Callable[[list[Any]], dict[str, Any]]  # the JSON body
    response: Callable[[Request, list[Any]], Response]  # the answer, honouring Accept


IMAGES = OutputFormat(body=images_body, response=image_response)


def prefers_async(prefer: str | None) -> bool:
    """Whether an RFC 7240 Prefer header asks for respond-async (among other preferences)."""
    if not prefer:
        return False
    return any(part.split(";")[0].split("=")[0].strip().lower() == "respond-async" for part in prefer.split(","))


async def delivery(
    respond_async: Annotated[bool, Query(alias="async", description="true: answer 202 at once with a job to poll at GET /jobs/{id}.")] = False,
    prefer: Annotated[str | None, Header(description="'respond-async' does the same as async=true (RFC 7240).")] = None,
) -> bool:
    return respond_async or prefers_async(prefer)


RespondAsync = Annotated[bool, Depends(delivery)]


async def respond(ctx: RunnerContext, request: Request, work: Work, respond_async: bool, output: OutputFormat = IMAGES) -> Response:
    """Run the work and answer with its result, or queue it as an async job and answer 202."""
    if respond_async:
        return submit_job(ctx, request, work, output)
    results = await generate(ctx, request, work)
    # Encoding PNGs (or a video) is CPU work: keep it off the event loop.
    return await asyncio.to_thread(output.response, request, results)


def submit_job(ctx: RunnerContext, request: Request, work: Work, output: OutputFormat) -> Response:
    job = new_job(ctx, work)
    jobs = get_jobs(request)
    jobs.make_room()
    # No disconnect check and no timeout: nobody waits on a connection for this job.
    ctx.worker.submit(job)  # a full queue answers 503 with Retry-After, as for a sync call

    def finish(results: list[Any]) -> dict[str, Any]:
        count_outputs(ctx, results)
        return output.body(results)

    record = jobs.add(job, ctx.settings.task.value, finish, output.response)
    headers = {"Location": f"/jobs/{record.id}"}
    if prefers_async(request.headers.get("prefer")):
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(job_state(record, jobs).model_dump(), status_code=202, headers=headers)


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

ACCEPTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "model": JobState,
        "description": "With 'Prefer: respond-async' or async=true: the job was queued; poll the Location header's URL.",
    }
}

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImageResponse,
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "Generated images; raw PNG with 'Accept: image/png' for one image.",
    },
    **ACCEPTED_RESPONSE,
    **ERROR_RESPONSES,
}
