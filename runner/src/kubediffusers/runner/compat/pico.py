"""PICO (Exoscape/pico) compatibility: its request models, clamping and answers.

PICO's API/*.py request models are copied field for field (names, types,
defaults; unknown fields ignored, as pydantic does by default), and its
ArgTransforms.py clamps rather than rejects: Total to 1-5, Seed to
0..2**32-1 (random when absent), GuidanceScale to 0-10, Strength to 0-1 and
Quality to round(250 x clamp(Quality, 1/250, 1)) steps. The clamped values
become the native request (``to_params``), which then meets the runner's own
limits like any other; what is generated is what is reported. Precision,
VaeType and AttentionSlicing are accepted: the dtype and VAE are the
pipeline's, set in the CR, and attention is the runner's.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.datastructures import UploadFile

from kubediffusers.runner.encoding import Encoding
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import CompatRoute
from kubediffusers.runner.types import GeneratedImage

SEED_MAX = 2**32 - 1
QUALITY_MAX = 250  # steps at Quality 1.0
TOTAL_MAX = 5


def clamp(value: float, low: float, high: float) -> float:
    """PICO's Utility.Clamp: bounds, and None stays None (handled by the callers)."""
    return low if value < low else high if value > high else value


def steps_of(quality: float) -> int:
    """ArgTransforms.GetQuality: Quality 0.2 -> 50 steps, 1.0 -> 250."""
    return round(clamp(QUALITY_MAX * clamp(quality, 1 / QUALITY_MAX, 1.0), 1, QUALITY_MAX))


def seed_of(seed: int | None) -> int:
    return int(clamp(seed, 0, SEED_MAX)) if seed is not None else secrets.randbelow(SEED_MAX + 1)


# -- PICO's request models (API/*.py) ------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Total: int = 1
    Seed: int | None = None
    GuidanceScale: float = Field(default=7.5, allow_inf_nan=False)
    Quality: float = Field(default=0.2, allow_inf_nan=False)
    VaeType: str = Field(default="original", description="Accepted; the VAE is the pipeline's (set in the CR).")
    AttentionSlicing: bool = Field(default=False, description="Accepted; attention is the runner's (optimizations in the CR).")


class StableDiffusionRequest(_Request):
    """API/StableDiffusionRequest.py (and -2, -Xl: the same fields)."""

    Model: str = Field(default="", description="Empty or the served model id (PICO loaded the model it named; a runner serves one).")
    Phrase: str
    NegativePhrase: str | None = None
    Precision: str = Field(default="half", description="Accepted; the dtype is the pipeline's (set in the CR).")


class StableDiffusionImageToImageRequest(StableDiffusionRequest):
    ImageBase64: str = Field(description="The input image file, base64 (no data: prefix).")
    Strength: float = Field(default=0.8, allow_inf_nan=False)


class StableDiffusionInpaintRequest(StableDiffusionRequest):
    ImageBase64: str = Field(description="The input image file, base64 (no data: prefix).")
    MaskImageBase64: str = Field(description="The mask image file, base64: white repaints, black keeps.")


class StableDiffusionImageVariationRequest(_Request):
    ImageBase64: str = Field(description="The input image file, base64 (no data: prefix).")
    GuidanceScale: float = Field(default=3.0, allow_inf_nan=False)


REQUESTS: dict[Task, type[_Request]] = {
    Task.TEXT_TO_IMAGE: StableDiffusionRequest,
    Task.IMAGE_TO_IMAGE: StableDiffusionImageToImageRequest,
    Task.INPAINTING: StableDiffusionInpaintRequest,
    Task.IMAGE_VARIATION: StableDiffusionImageVariationRequest,
}

# The attributes PICO's Models/StableDiffusion.py reports per image, by task, in its order.
ATTRIBUTES: dict[Task, tuple[str, ...]] = {
    Task.TEXT_TO_IMAGE: ("Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"),
    Task.IMAGE_TO_IMAGE: ("Model", "Phrase", "NegativePhrase", "Strength", "Seed", "GuidanceScale", "Quality", "Precision", "Index"),
    Task.INPAINTING: ("Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"),
    Task.IMAGE_VARIATION: ("Seed", "GuidanceScale", "Quality", "Index"),
}

# Our upload field for each of PICO's base64 fields.
_IMAGES = {"ImageBase64": "image", "MaskImageBase64": "mask_image"}


def request_model(task: Task, route: CompatRoute) -> type[_Request]:
    """The route's request model: its task's, with the route's own defaults (GuidanceScale 5.0 on -xl)."""
    base = REQUESTS[task]
    fields: Any = {name: (type(value), value) for name, value in route.defaults}
    model: type[_Request] = create_model(f"{route.name}Request", __base__=base, **fields)
    return model


# -- to the native request, and back -------------------------------------------


def upload_of(data: str, field: str, max_bytes: int) -> UploadFile:
    """A base64 field as the upload the native route would have received; the
    runner's upload checks (size, pixels, format) then read it as any other."""
    if len(data) > max_bytes * 4 // 3 + 4:
        raise InvalidInput(f"{field}: the image is larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not base64: send the image file's bytes base64-encoded, without a data: prefix") from None
    return UploadFile(io.BytesIO(raw), size=len(raw), filename=field)


def clamped(request: _Request) -> dict[str, Any]:
    """PICO's ArgTransforms applied: the values that are generated and reported."""
    values: dict[str, Any] = {
        "Seed": seed_of(request.Seed),
        "GuidanceScale": float(clamp(request.GuidanceScale, 0.0, 10.0)),
        "Quality": steps_of(request.Quality),
        "Total": int(clamp(request.Total, 1, TOTAL_MAX)),
    }
    if isinstance(request, StableDiffusionImageToImageRequest):
        values["Strength"] = float(clamp(request.Strength, 0.0, 1.0))
    return values


def to_params(params_model: type[TaskParams], request: _Request, values: dict[str, Any], max_upload_bytes: int) -> TaskParams:
    """The native request for PICO's (already clamped) one."""
    native: dict[str, Any] = {
        "seed": values["Seed"],
        "guidance_scale": values["GuidanceScale"],
        "num_inference_steps": values["Quality"],
        "num_images_per_prompt": values["Total"],
    }
    if isinstance(request, StableDiffusionRequest):
        native.update(prompt=request.Phrase, negative_prompt=request.NegativePhrase or "", model_id=request.Model)
    if "Strength" in values:
        native["strength"] = values["Strength"]
    for pico_field, field in _IMAGES.items():
        if hasattr(request, pico_field):
            native[field] = upload_of(getattr(request, pico_field), pico_field, max_upload_bytes)
    try:
        return params_model.model_validate(native)
    except ValidationError as exc:
        # PICO had no such bounds; its clients get a 400 saying which of ours was hit.
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise InvalidInput(f"outside this runner's limits: {problems}") from None


def answer(
    task: Task, route: CompatRoute, request: _Request, values: dict[str, Any], model_id: str, precision: str, images: list[GeneratedImage], elapsed: float
) -> dict[str, Any]:
    """PicoResponse: ElapsedSeconds and one ImageLayer (Name, Image, Attributes) per image."""
    known = {
        "Model": model_id,
        "Phrase": getattr(request, "Phrase", None),
        "NegativePhrase": getattr(request, "NegativePhrase", None),
        "Strength": values.get("Strength"),
        "GuidanceScale": values["GuidanceScale"],
        "Quality": values["Quality"],
        "Precision": precision,
    }
    layers = []
    for index, item in enumerate(images):
        # Each image reports its own seed (seed + index), which reproduces it alone.
        attributes = {**known, "Seed": item.seed, "Index": index}
        layers.append(
            {
                "Name": route.name,
                "Image": base64.b64encode(Encoding().encode(item.source)).decode("ascii"),
                "Attributes": {key: attributes[key] for key in ATTRIBUTES[task]},
            }
        )
    return {"ElapsedSeconds": elapsed, "Images": layers}
