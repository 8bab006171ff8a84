"""Delivering a prepared request: queueing it, answering now or as an async
job, negotiating Accept, and the response bodies (livepeer ai-runner's shapes)."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated, Any

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.types import Receive

from kubediffusers.runner.context import RunnerContext
from kubediffusers.runner.encoding import FORMAT_OF_MEDIA_TYPE, MEDIA_TYPES, Encoding, choose, encode_all
from kubediffusers.runner.encoding import pool as encoder_pool
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.jobs import job_state
from kubediffusers.runner.settings import ImageFormat, RunnerSettings
from kubediffusers.runner.tasks import Output
from kubediffusers.runner.types import GeneratedImage, GeneratedVideo, Work
from kubediffusers.runner.video import encode_mp4
from kubediffusers.runner.worker import Job

# -- bodies and Accept -----------------------------------------------------------


def media_types(request: Request) -> list[str]:
    """The media types the Accept header lists (q=0 means 'not this')."""
    types = []
    for part in request.headers.get("accept", "").split(","):
        kind, *options = (piece.strip().lower() for piece in part.split(";"))
        if kind and not any(o.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for o in options):
            types.append(kind)
    return types


def accepts(request: Request, media_type: str) -> bool:
    """Whether the client asks for ``media_type`` rather than JSON."""
    types = media_types(request)
    return media_type in types and "application/json" not in types


def raw_image_format(request: Request) -> ImageFormat | None:
    """The image format Accept asks for instead of JSON (the first one listed), or None."""
    types = media_types(request)
    if "application/json" in types:
        return None
    return next((FORMAT_OF_MEDIA_TYPE[t] for t in types if t in FORMAT_OF_MEDIA_TYPE), None)


def request_encoding(work: Work, settings: RunnerSettings) -> Encoding:
    """The encoding a request names (output_format, output_quality), else the runner's default."""
    params = work.params
    named = getattr(params, "output_format", None)
    return replace(choose(named, getattr(params, "output_quality", None), settings), named=named is not None)


def media(data: bytes, seed: int, nsfw: bool, encoding: Encoding) -> dict[str, Any]:
    return {"url": encoding.data_url(data), "seed": seed, "nsfw": nsfw}


def images_body(images: list[GeneratedImage], encoding: Encoding) -> dict[str, Any]:
    encoded = encode_all([i.source for i in images], encoding)
    return {"images": [media(data, i.seed, i.nsfw, encoding) for data, i in zip(encoded, images, strict=True)]}


def images_json(images: list[GeneratedImage], encoding: Encoding) -> bytes:
    """``images_body`` as the JSON bytes JSONResponse would send, built around the base64 bytes.

    json.dumps scans each data URL for characters to escape and the text is encoded
    back to bytes (0.2 ms per 512x512 JPEG here, a sixth of the serving cost); base64,
    a media type and numbers need no escaping, so the bytes are joined as they are."""
    encoded = encode_all([i.source for i in images], encoding)
    head = f'{{"url":"data:{encoding.media_type};base64,'.encode("ascii")
    items = [
        b'%s%s","seed":%d,"nsfw":%s}' % (head, base64.b64encode(data), image.seed, b"true" if image.nsfw else b"false")
        for data, image in zip(encoded, images, strict=True)
    ]
    return b'{"images":[' + b",".join(items) + b"]}"


def image_response(request: Request, images: list[GeneratedImage], encoding: Encoding) -> Response:
    """JSON with data URLs (ai-runner's shape), or one raw image when Accept asks for PNG, JPEG or WebP."""
    raw = raw_image_format(request)
    if raw is None:
        return Response(images_json(images, encoding), media_type="application/json")
    if encoding.named and encoding.format is not raw:
        raise InvalidInput(f"output_format is {encoding.format.value} but Accept asks for {MEDIA_TYPES[raw]}; ask for one format")
    if len(images) != 1:
        raise InvalidInput(f"Accept: {MEDIA_TYPES[raw]} returns a single image; ask for num_images_per_prompt=1")
    only, encoding = images[0], replace(encoding, format=raw)
    return Response(
        encode_all([only.source], encoding)[0],
        media_type=encoding.media_type,
        headers={"X-Seed": str(only.seed), "X-Nsfw": str(only.nsfw).lower()},
    )


def video_body(videos: list[GeneratedVideo], encoding: Encoding) -> dict[str, Any]:
    """ai-runner's shape: one list of frames per video."""
    body = []
    for video in videos:
        encoded = encode_all(video.frames, encoding)
        body.append([media(data, video.seed, video.nsfw, encoding) for data in encoded])
    return {"frames": body}


def video_response(request: Request, videos: list[GeneratedVideo], encoding: Encoding) -> Response:
    if accepts(request, "video/mp4"):
        return mp4_response(videos[0])
    return JSONResponse(video_body(videos, encoding))


def bytes_of(item: dict[str, Any]) -> tuple[bytes, str]:
    """The encoded bytes of one ``media`` entry of a body, and their media type."""
    head, data = item["url"].split(",", 1)
    return base64.b64decode(data), head.removeprefix("data:").split(";", 1)[0]


def image_response_from_body(request: Request, body: dict[str, Any], fps: int | None = None) -> Response:
    """``image_response`` for a kept job: the raw image is the body's own, never re-encoded."""
    raw = raw_image_format(request)
    if raw is None:
        return JSONResponse(body)
    images = body["images"]
    if len(images) != 1:
        raise InvalidInput(f"Accept: {MEDIA_TYPES[raw]} returns a single image; ask for num_images_per_prompt=1")
    data, media_type = bytes_of(images[0])
    if media_type != MEDIA_TYPES[raw]:
        raise InvalidInput(f"this job's image is {media_type}; ask for it with Accept: {media_type}")
    return Response(data, media_type=media_type, headers={"X-Seed": str(images[0]["seed"]), "X-Nsfw": str(images[0]["nsfw"]).lower()})


def mp4_response(video: GeneratedVideo) -> Response:
    return Response(
        encode_mp4(video.frames, video.fps),
        media_type="video/mp4",
        headers={"X-Seed": str(video.seed), "X-Nsfw": str(video.nsfw).lower(), "X-Frames": str(len(video.frames))},
    )


def video_response_from_body(request: Request, body: dict[str, Any], fps: int | None = None) -> Response:
    """``video_response`` for a kept job: the mp4 is encoded from the body's frames."""
    if accepts(request, "video/mp4"):
        first = body["frames"][0]
        frames = [Image.open(io.BytesIO(bytes_of(item)[0])).convert("RGB") for item in first]
        return mp4_response(GeneratedVideo(frames=frames, seed=first[0]["seed"], nsfw=first[0]["nsfw"], fps=fps or 7))
    return JSONResponse(body)


def kept_mp4_response(body: dict[str, Any], data: bytes) -> Response:
    """The answer ``video_response_from_body`` gave, from the mp4 it made then (shared jobs keep it on the claim)."""
    first = body["frames"][0]
    return Response(
        data, media_type="video/mp4", headers={"X-Seed": str(first[0]["seed"]), "X-Nsfw": str(first[0]["nsfw"]).lower(), "X-Frames": str(len(first))}
    )


@dataclass(frozen=True)
class OutputFormat:
    """How a task's results become an answer, in the request's encoding."""

    body: Callable[[list[Any], Encoding], dict[str, Any]]  # the JSON body
    response: Callable[[Request, list[Any], Encoding], Response]  # the answer, honouring Accept
    from_body: Callable[[Request, dict[str, Any], int | None], Response]  # the same answer from a kept body (async jobs), with the video's fps

    def bind(self, encoding: Encoding) -> tuple[Callable[[list[Any]], dict[str, Any]], Callable[[Request, list[Any]], Response]]:
        """(body, response) of one request: its encoding fixed now, used when its results come."""
        return partial(self.body_of, encoding), partial(self.response_of, encoding)

    def body_of(self, encoding: Encoding, results: list[Any]) -> dict[str, Any]:
        return self.body(results, encoding)

    def response_of(self, encoding: Encoding, request: Request, results: list[Any]) -> Response:
        return self.response(request, results, encoding)


FORMATS: dict[Output, OutputFormat] = {
    Output.IMAGES: OutputFormat(body=images_body, response=image_response, from_body=image_response_from_body),
    Output.VIDEO: OutputFormat(body=video_body, response=video_response, from_body=video_response_from_body),
}


# -- now, or later as an async job ---------------------------------------------


def prefers_async(prefer: str | None) -> bool:
    """Whether an RFC 7240 Prefer header asks for respond-async (among other preferences)."""
    if not prefer:
        return False
    return any(part.split(";")[0].split("=")[0].strip().lower() == "respond-async" for part in prefer.split(","))


# A generation route's own parameters, not a dependency of its own: FastAPI solves
# a sub-dependency's parameters in a second pass on every request.
AsyncQuery = Annotated[bool, Query(alias="async", description="true: answer 202 at once with a job to poll at GET /jobs/{id}.")]
PreferHeader = Annotated[str | None, Header(description="'respond-async' does the same as async=true (RFC 7240).")]


def new_job(ctx: RunnerContext, work: Work) -> Job[list[Any]]:
    pipeline = ctx.model.require_ready()
    return Job(
        work=work,
        execute=pipeline.generate,  # run_batch with the add-ons: adapters before, safety check after
        batch_key=pipeline.job_key(work),
        weight=work.num_images,
    )


def count_outputs(ctx: RunnerContext, results: list[GeneratedImage | GeneratedVideo]) -> None:
    # A video counts its frames: the metric is images (or video frames) generated.
    produced = sum(len(item.frames) if isinstance(item, GeneratedVideo) else 1 for item in results)
    ctx.metrics.images.labels(ctx.settings.task.value).inc(produced)


async def generate(ctx: RunnerContext, request: Request, work: Work, then: Callable[[list[Any]], Any] | None = None) -> Any:
    """Queue the work, wait for its turn and its result within the request timeout.

    With ``then``, what it made of the results on the inference thread (``Job.then``),
    which then counts them; without, the results, counted here."""
    job = new_job(ctx, work)
    job.then = then
    ctx.worker.submit(job)
    watcher = asyncio.create_task(watch_disconnect(request.receive, job))
    try:
        results = await ctx.worker.result(job, ctx.settings.request_timeout_seconds)
    finally:
        watcher.cancel()
    if then is None:
        count_outputs(ctx, results)
    return results


async def watch_disconnect(receive: Receive, job: Job[Any], interval: float = 0.5) -> None:
    """Cancel the job when its client leaves while it waits or runs: the worker drops it
    from the queue, or stops at the next step, instead of generating for nobody.

    The body has been read, so the server's next message is ``http.disconnect``, sent
    the moment the connection closes (uvicorn: at once if it already has): one wait,
    not a poll of ``Request.is_disconnected`` per request (an anyio cancel scope and a
    loop iteration each time, a fixed cost on every request)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(interval)  # a server that repeats a body message: wait, do not spin
    if not job.future.done():
        job.cancel("client_disconnected")


async def respond(ctx: RunnerContext, request: Request, work: Work, respond_async: bool, output: OutputFormat) -> Response:
    """Run the work and answer with its result, or queue it as an async job and answer 202."""
    if respond_async:
        return await submit_job(ctx, request, work, output)
    _, response = output.bind(request_encoding(work, ctx.settings))

    def answer(results: list[Any]) -> Response:
        count_outputs(ctx, results)
        return response(request, results)

    # Encoding images (or a video) is CPU work: off the event loop and the inference
    # thread. The inference thread hands the results straight to an encoder thread
    # (which shares a batch with its pool mates); the event loop wakes once, for the answer.
    def start(results: list[Any]) -> Future[Response]:
        return encoder_pool().submit(answer, results)

    encoded: Future[Response] = await generate(ctx, request, work, then=start)
    return await asyncio.wrap_future(encoded)


async def submit_job(ctx: RunnerContext, request: Request, work: Work, output: OutputFormat) -> Response:
    job = new_job(ctx, work)
    jobs = ctx.jobs
    job_id = await jobs.admit()
    # No disconnect check and no timeout: nobody waits on a connection for this job.
    try:
        ctx.worker.submit(job)  # a full queue answers 503 with Retry-After, as for a sync call
    except BaseException:
        await jobs.withdraw(job_id)
        raise

    body, _ = output.bind(request_encoding(work, ctx.settings))

    def finish(results: list[Any]) -> dict[str, Any]:
        count_outputs(ctx, results)
        return body(results)

    fps = getattr(work.params, "fps", None)  # all a kept video needs of the request: not its input images

    def respond(request: Request, body: dict[str, Any]) -> Response:
        return output.from_body(request, body, fps)

    record = jobs.add(job, ctx.settings.task.value, finish, respond, fps=fps, job_id=job_id)
    await jobs.publish(record)
    headers = {"Location": f"/jobs/{record.id}"}
    if prefers_async(request.headers.get("prefer")):
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(job_state(record, jobs).model_dump(), status_code=202, headers=headers)
