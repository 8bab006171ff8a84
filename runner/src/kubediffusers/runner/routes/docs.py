"""What the OpenAPI document says the generation and job routes answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from kubediffusers.runner.jobs import JobState
from kubediffusers.runner.tasks import Output

Responses = dict[int | str, dict[str, Any]]


class Media(BaseModel):
    url: str = Field(description="The image as a data URL (data:image/png;base64,...).")
    seed: int = Field(description="Seed that reproduces this image alone.")
    nsfw: bool = Field(description="Whether the safety checker flagged the image (false when none is loaded).")


class ImageResponse(BaseModel):
    images: list[Media]


class VideoResponse(BaseModel):
    frames: list[list[Media]] = Field(description="One list of frames (PNG data URLs) per video.")


class ErrorDetail(BaseModel):
    msg: str


class HTTPError(BaseModel):
    detail: ErrorDetail


class FieldError(BaseModel):
    loc: list[str] = Field(description="Where: the field's path.")
    msg: str
    type: str


class ValidationDetail(BaseModel):
    msg: str = Field(description="All errors in one line (the first 20, then how many more).")
    errors: list[FieldError] = Field(description="At most 20 errors.")


class ValidationError(BaseModel):
    detail: ValidationDetail


ERROR_RESPONSES: Responses = {
    code: {"model": ValidationError if code == 422 else HTTPError, "description": text}
    for code, text in {
        400: "Input outside the limits or an unreadable upload",
        401: "Missing or wrong bearer token (with WWW-Authenticate: Bearer)",
        408: "The request body did not arrive within the body deadline",
        413: "Request body too large",
        422: "Request does not match the schema",
        500: "Unexpected failure",
        503: "Model not ready, queue full, GPU out of memory or the runner shutting down (see Retry-After)",
        504: "Not finished within the request timeout",
        507: "The runner's temp directory is full: an upload could not be stored (see Retry-After)",
    }.items()
}


ACCEPTED_RESPONSE: Responses = {
    202: {
        "model": JobState,
        "description": "With 'Prefer: respond-async' or async=true: the job was queued; poll the Location header's URL.",
    }
}


def _generation(model: type[BaseModel], media_type: str, description: str) -> Responses:
    ok = {"model": model, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}, "description": description}
    return {200: ok, **ACCEPTED_RESPONSE, **ERROR_RESPONSES}


# What a generation route answers, by the kind of output of its task.
RESPONSES: dict[Output, Responses] = {
    Output.IMAGES: _generation(ImageResponse, "image/png", "Generated images; raw PNG with 'Accept: image/png' for one image."),
    Output.VIDEO: _generation(VideoResponse, "video/mp4", "The video's frames; an H.264 mp4 file with 'Accept: video/mp4'."),
}
