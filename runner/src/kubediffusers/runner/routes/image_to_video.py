from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kubediffusers.runner.context import RunnerContext, get_context
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.images import encode_png, png_data_url
from kubediffusers.runner.pipelines.image_to_video import ImageToVideoPipeline
from kubediffusers.runner.pipelines.per_seed import GeneratedVideo
from kubediffusers.runner.routes.common import (
    ACCEPTED_RESPONSE,
    ERROR_RESPONSES,
    MAX_SEED,
    Media,
    OutputFormat,
    RespondAsync,
    Steps,
    check_common_limits,
    fit_image,
    new_work,
    read_image,
    respond,
)
from kubediffusers.runner.video import encode_mp4

router = APIRouter(tags=["generate"])

Guidance = Annotated[float, Field(ge=0, le=50, allow_inf_nan=False)]


class ImageToVideoParams(BaseModel):
    """Animate an image with Stable Video Diffusion."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[UploadFile, File(description="The first frame of the video (PNG, JPEG, WebP, ...).")]
    height: Annotated[
        int | None,
        Field(
            ge=8,
            le=8192,
            description="Resize the image to this height first; a multiple of the model's size step (64 for SVD). Default: the image's, trimmed to that step.",
        ),
    ] = None
    width: Annotated[
        int | None,
        Field(
            ge=8,
            le=8192,
            description="Resize the image to this width first; a multiple of the model's size step (64 for SVD). Default: the image's, trimmed to that step.",
        ),
    ] = None
    num_frames: Annotated[
        int | None,
        # At least 2: guidance rises from the first frame to the last, and diffusers
        # mis-sizes its batch for a single frame.
        Field(ge=2, le=1000, description="Frames to generate, at least 2. Default: the model's (14 for SVD, 25 for SVD-XT). The runner's limit applies."),
    ] = None
    fps: Annotated[int, Field(ge=1, le=60, description="Frames per second: conditions the motion and is the mp4's frame rate.")] = 7
    motion_bucket_id: Annotated[int, Field(ge=0, le=1023, description="How much motion: higher moves more (SVD was trained on 0-255).")] = 127
    noise_aug_strength: Annotated[
        float,
        Field(ge=0, le=1, allow_inf_nan=False, description="Noise added to the image: more frees the video from it, with more motion."),
    ] = 0.02
    decode_chunk_size: Annotated[
        int | None,
        Field(ge=1, le=1000, description="Frames the VAE decodes at once: fewer saves GPU memory, more is faster. Default: all."),
    ] = None
    num_inference_steps: Steps = 25
    min_guidance_scale: Annotated[Guidance, Field(description="Guidance on the first frame; it rises linearly over the frames.")] = 1.0
    max_guidance_scale: Annotated[Guidance, Field(description="Guidance on the last frame (1 or less disables guidance).")] = 3.0
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED, description="Seed of the video. Random when unset.")] = None

    @model_validator(mode="after")
    def _guidance_rises(self) -> ImageToVideoParams:
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ValueError("min_guidance_scale must not exceed max_guidance_scale")
        return self


def video_body(videos: list[GeneratedVideo]) -> dict[str, Any]:
    """ai-runner's shape: one list of frames per video."""
    return {"frames": [[{"url": png_data_url(encode_png(frame)), "seed": video.seed, "nsfw": video.nsfw} for frame in video.frames] for video in videos]}


def wants_mp4(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "video/mp4" in accept and "application/json" not in accept


def video_response(request: Request, videos: list[GeneratedVideo]) -> Response:
    if wants_mp4(request):
        video = videos[0]
        return Response(
            encode_mp4(video.frames, video.fps),
            media_type="video/mp4",
            headers={"X-Seed": str(video.seed), "X-Nsfw": str(video.nsfw).lower(), "X-Frames": str(len(video.frames))},
        )
    return JSONResponse(video_body(videos))


VIDEO = OutputFormat(body=video_body, response=video_response)


class VideoResponse(BaseModel):
    frames: list[list[Media]] = Field(description="One list of frames (PNG data URLs) per video.")


VIDEO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": VideoResponse,
        "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The video's frames; an H.264 mp4 file with 'Accept: video/mp4'.",
    },
    **ACCEPTED_RESPONSE,
    **ERROR_RESPONSES,
}


@router.post(
    "/image-to-video",
    summary="Image to video",
    response_model=None,
    responses=VIDEO_RESPONSES,
    operation_id="image_to_video",
)
async def image_to_video(
    params: Annotated[ImageToVideoParams, Form(media_type="multipart/form-data")],
    request: Request,
    ctx: Annotated[RunnerContext, Depends(get_context)],
    respond_async: RespondAsync,
) -> Response:
    check_common_limits(params, ctx)
    pipeline = cast(ImageToVideoPipeline, ctx.model.require_ready())
    num_frames = params.num_frames or pipeline.default_frames
    if num_frames > ctx.settings.max_video_frames:
        raise InvalidInput(f"num_frames is {num_frames}; this runner allows at most {ctx.settings.max_video_frames}")
    params.num_frames = num_frames
    image = await read_image(params.image, "image", ctx)
    picture = fit_image(image, params.height, params.width, ctx, multiple=pipeline.size_multiple)
    return await respond(ctx, request, new_work(params, image=picture), respond_async, VIDEO)
