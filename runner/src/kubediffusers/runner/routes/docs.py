"""What the OpenAPI document says the generation and job routes answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from kubediffusers.runner.errors import MAX_REPORTED_ERRORS
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
    loc: list[str | int] = Field(description='Where: "body", "query" or "path", then the field\'s path.')
    msg: str
    type: str = Field(description='pydantic\'s error type; "too_many_errors" for the item that says how many more there were.')


# Not FastAPI's names (HTTPValidationError, ValidationError): FastAPI writes its own
# schemas under those names over any others whenever a route keeps its default 422.
class ValidationErrors(BaseModel):
    """FastAPI's (and livepeer ai-runner's) 422 shape, bounded."""

    detail: list[FieldError] = Field(
        description=f"At most {MAX_REPORTED_ERRORS} items: past that, the first {MAX_REPORTED_ERRORS - 1} errors and one saying how many more there were.",
        max_length=MAX_REPORTED_ERRORS,
    )


ERROR_RESPONSES: Responses = {
    code: {"model": ValidationErrors if code == 422 else HTTPError, "description": text}
    for code, text in {
        400: 'Input outside the limits, an unreadable upload, or an empty prompt ("Prompt must be provided.")',
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
