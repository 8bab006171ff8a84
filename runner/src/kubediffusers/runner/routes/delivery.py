"""Delivering a prepared request: queueing it, answering now or as an async
job, negotiating Accept, and the response bodies (livepeer ai-runner's shapes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.images import encode_png, png_data_url
from kubediffusers.runner.jobs import job_state
from kubediffusers.runner.tasks import Output
from kubediffusers.runner.types import GeneratedImage, GeneratedVideo, Work
from kubediffusers.runner.video import encode_mp4
from kubediffusers.runner.worker import Disconnected, Job

# -- bodies and Accept -----------------------------------------------------------


def accepts(request: Request, media_type: str) -> bool:
    """Whether the client asks for ``media_type`` rather than JSON."""
    accept = request.headers.get("accept", "")
    return media_type in accept and "application/json" not in accept


def media(image: Any, seed: int, nsfw: bool) -> dict[str, Any]:
    return {"url": png_data_url(encode_png(image)), "seed": seed, "nsfw": nsfw}


def images_body(images: list[GeneratedImage]) -> dict[str, Any]:
    return {"images": [media(i.image, i.seed, i.nsfw) for i in images]}


def image_response(request: Request, images: list[GeneratedImage]) -> Response:
    """JSON with data URLs (ai-runner's shape), or raw PNG when asked for one image."""
    if accepts(request, "image/png"):
        if len(images) != 1:
            raise InvalidInput("Accept: image/png returns a single image; ask for num_images_per_prompt=1")
        only = images[0]
        return Response(
            encode_png(only.image),
            media_type="image/png",
            headers={"X-Seed": str(only.seed), "X-Nsfw": str(only.nsfw).lower()},
        )
    return JSONResponse(images_body(images))


def video_body(videos: list[GeneratedVideo]) -> dict[str, Any]:
    """ai-runner's shape: one list of frames per video."""
    return {"frames": [[media(frame, video.seed, video.nsfw) for frame in video.frames] for video in videos]}


def video_response(request: Request, videos: list[GeneratedVideo]) -> Response:
    if accepts(request, "video/mp4"):
        video = videos[0]
        return Response(
            encode_mp4(video.frames, video.fps),
            media_type="video/mp4",
            headers={"X-Seed": str(video.seed), "X-Nsfw": str(video.nsfw).lower(), "X-Frames": str(len(video.frames))},
        )
    return JSONResponse(video_body(videos))


@dataclass(frozen=True)
class OutputFormat:
    """How a task's results become an answer."""

    body: Callable[[list[Any]], dict[str, Any]]  # the JSON body
    response: Callable[[Request, list[Any]], Response]  # the answer, honouring Accept


FORMATS: dict[Output, OutputFormat] = {
    Output.IMAGES: OutputFormat(body=images_body, response=image_response),
    Output.VIDEO: OutputFormat(body=video_body, response=video_response),
}


# -- now, or later as an async job ---------------------------------------------


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


def new_job(ctx: RunnerContext, work: Work, disconnected: Disconnected | None = None) -> Job[list[Any]]:
    pipeline = ctx.model.require_ready()
    return Job(
        work=work,
        execute=pipeline.generate,  # run_batch with the add-ons: adapters before, safety check after
        batch_key=pipeline.job_key(work),
        weight=work.num_images,
        disconnected=disconnected,
    )


def count_outputs(ctx: RunnerContext, results: list[GeneratedImage | GeneratedVideo]) -> None:
    # A video counts its frames: the metric is images (or video frames) generated.
    produced = sum(len(item.frames) if isinstance(item, GeneratedVideo) else 1 for item in results)
    ctx.metrics.images.labels(ctx.settings.task.value).inc(produced)


async def generate(ctx: RunnerContext, request: Request, work: Work) -> list[Any]:
    """Queue the work, wait for its turn and its result within the request timeout."""
    job = new_job(ctx, work, disconnected=request.is_disconnected)
    ctx.worker.submit(job)
    results = await ctx.worker.result(job, ctx.settings.request_timeout_seconds)
    count_outputs(ctx, results)
    return results


async def respond(ctx: RunnerContext, request: Request, work: Work, respond_async: bool, output: OutputFormat) -> Response:
    """Run the work and answer with its result, or queue it as an async job and answer 202."""
    if respond_async:
        return submit_job(ctx, request, work, output)
    results = await generate(ctx, request, work)
    # Encoding PNGs (or a video) is CPU work: keep it off the event loop.
    return await asyncio.to_thread(output.response, request, results)


def submit_job(ctx: RunnerContext, request: Request, work: Work, output: OutputFormat) -> Response:
    job = new_job(ctx, work)
    jobs = ctx.jobs
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
