"""Every task's request model, below both the routes and the pipelines.

Each field is spelled once here: the shared aliases (steps, seed, images,
height, width, guidance, strength) carry the bounds, a task's field adds only
its own description or default. The runner's own limits (from its settings)
are checked by ``check_limits``, a method of the models, before anything is
read or queued. Model-dependent checks (native size, noise level, frames)
belong to the pipeline's ``prepare``; size checks live in ``inputs``.

A field every task gains (loras, scheduler, output_format, ...) goes on
``TaskParams``; one every image task gains goes on ``GenerationParams``.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import File, UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kubediffusers.runner import schedulers
from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.loras import MAX_LORAS, pick_adapters
from kubediffusers.runner.settings import MAX_SIDE, MIN_SIDE, ImageFormat, RunnerSettings

MAX_SEED = 2**63 - 1 - 64  # torch seeds are 64-bit; leave room for seed + i

# Field types shared by the task parameter models.
Steps = Annotated[int, Field(ge=1, le=1000, description="Denoising steps: more is slower and finer. The runner's limit applies.")]
Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED, description="Seed of the first image; image i uses seed + i. Random when unset.")]
NumImages = Annotated[int, Field(ge=1, le=64, description="How many images to generate. The runner's limit applies.")]
Height = Annotated[int | None, Field(ge=MIN_SIDE, le=MAX_SIDE, description="Height in pixels, a multiple of 8. Default: the model's native size.")]
Width = Annotated[int | None, Field(ge=MIN_SIDE, le=MAX_SIDE, description="Width in pixels, a multiple of 8. Default: the model's native size.")]
Guidance = Annotated[float, Field(ge=0, le=50, allow_inf_nan=False)]
Strength = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Prompt = Annotated[str, Field(min_length=1, max_length=4000, description="What to generate.")]
NegativePrompt = Annotated[str, Field(max_length=4000, description="What to steer away from.")]
ModelId = Annotated[
    str,
    Field(max_length=200, description="The served model's id, or empty; another id is a 400 (livepeer ai-runner's clients send it on every request)."),
]
Scheduler = Annotated[str | None, Field(max_length=64, description=schedulers.DESCRIPTION)]
OutputFormat = Annotated[
    ImageFormat | None,
    Field(description="Image encoding: png (lossless), jpeg or webp. Default: the runner's (png), or Accept's for a raw single image."),
]
OutputQuality = Annotated[int | None, Field(ge=1, le=100, description="JPEG/WebP quality, 1-100. Default: the runner's (90).")]


def _json_text(value: object) -> object:
    # livepeer sends loras as a JSON string (a form field can be nothing else); a JSON body may send the object.
    return json.dumps(value) if isinstance(value, dict) else value


Loras = Annotated[
    str,
    BeforeValidator(_json_text),
    Field(
        max_length=4000,
        description=(
            f'LoRA adapters to apply, as livepeer sends them: a JSON object {{"<repo id or adapter name>": weight}} (a string; '
            f"a JSON body may send the object), at most {MAX_LORAS}, weights 0-10 (null: the declared scale). Only adapters "
            "declared in spec.loras; none: the model alone."
        ),
    ),
]
SafetyCheck = Annotated[
    bool,
    Field(description="Run the runner's safety checker (when enabled) on the outputs and report nsfw; false skips it (livepeer's field)."),
]


def upload(description: str) -> object:
    """An uploaded image field (multipart/form-data)."""
    return File(description=description)


class TaskParams(BaseModel):
    """What every task's request has: steps and a seed, and the runner's limits on them."""

    model_config = ConfigDict(extra="forbid")

    num_inference_steps: Steps = 50
    seed: Seed = None
    model_id: ModelId = ""
    loras: Loras = ""
    safety_check: SafetyCheck = True
    scheduler: Scheduler = None
    output_format: OutputFormat = None
    output_quality: OutputQuality = None

    @property
    def num_outputs(self) -> int:
        """Outputs (images, or videos) the request makes."""
        return 1

    def steps_run(self) -> int:
        """Denoising steps one output actually runs."""
        return self.num_inference_steps

    @classmethod
    def upload_fields(cls) -> list[str]:
        """Names of the uploaded files the request carries (none: a JSON body)."""
        return [name for name, info in cls.model_fields.items() if info.annotation is UploadFile]

    def uploads(self) -> dict[str, UploadFile]:
        return {name: getattr(self, name) for name in self.upload_fields()}

    def check_limits(self, settings: RunnerSettings) -> None:
        """The runner's limits, from its settings; raises InvalidInput."""
        if "num_inference_steps" not in self.model_fields_set:
            # The default must never break a runner configured with fewer steps.
            self.num_inference_steps = min(self.num_inference_steps, settings.max_steps)
            self.model_fields_set.discard("num_inference_steps")  # still a default: a checkpoint family's may replace it
        if self.num_inference_steps > settings.max_steps:
            raise InvalidInput(f"num_inference_steps is {self.num_inference_steps}; this runner allows at most {settings.max_steps}")
        if self.model_id and self.model_id != settings.model_id:
            # livepeer ai-runner's words, so its clients' logs read the same.
            raise InvalidInput(f"pipeline configured with {settings.model_id} but called with {self.model_id}.")
        pick_adapters(self.loras, settings.loras)  # 400 for an adapter the runner does not declare


class ImagesParams(TaskParams):
    """A request for several images, one seed each."""

    num_images_per_prompt: NumImages = 1

    @property
    def num_outputs(self) -> int:
        return self.num_images_per_prompt

    def check_limits(self, settings: RunnerSettings) -> None:
        super().check_limits(settings)
        if self.num_images_per_prompt > settings.max_images_per_request:
            raise InvalidInput(f"num_images_per_prompt is {self.num_images_per_prompt}; this runner allows at most {settings.max_images_per_request}")


class GenerationParams(ImagesParams):
    """Parameters every prompted image-generating task shares."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    guidance_scale: Annotated[
        Guidance,
        Field(
            description="How strongly the prompt guides the image (0 or 1 disables classifier-free guidance; sd-turbo wants 0; "
            "FLUX.1-dev: the distilled guidance). Default: 7.5, or the checkpoint family's."
        ),
    ] = 7.5
    num_inference_steps: Annotated[
        Steps,
        Field(description="Denoising steps: more is slower and finer (sd-turbo: 1-4). Default: 50, or the checkpoint family's. The runner's limit applies."),
    ] = 50
    seed: Seed = None
    # Transformer (DiT) families only: refused by the others (families.apply_defaults).
    max_sequence_length: Annotated[
        int | None,
        Field(ge=1, le=1024, description="Text tokens the T5/Qwen encoder reads (FLUX, SD3, Z-Image). Default: the family's (FLUX.1-schnell 256)."),
    ] = None
    true_cfg_scale: Annotated[
        Guidance | None,
        Field(description="FLUX only: real classifier-free guidance with negative_prompt when above 1 (twice the compute). Default: 1, off."),
    ] = None


class StrengthParams(GenerationParams):
    """img2img-style tasks: only strength x steps of the schedule run."""

    strength: Strength = 1.0

    def steps_run(self) -> int:
        return max(1, int(self.num_inference_steps * self.strength))

    def check_limits(self, settings: RunnerSettings) -> None:
        super().check_limits(settings)
        if int(self.num_inference_steps * self.strength) < 1:
            raise InvalidInput("strength x num_inference_steps must be at least 1 so that one step runs")


class TextToImageParams(GenerationParams):
    """Generate images from a text prompt."""

    height: Height = None
    width: Width = None


class ImageToImageParams(StrengthParams):
    """Transform an uploaded image guided by a prompt."""

    image_guidance_scale: Annotated[
        Guidance,
        Field(description="How closely to follow the input image, for pix2pix-style checkpoints; ignored by pipelines without that parameter."),
    ] = 1.5

    image: Annotated[UploadFile, upload("The image to transform (PNG, JPEG, WebP, ...).")]
    strength: Annotated[Strength, Field(description="How much to change the image: 0 keeps it, 1 ignores it. Only strength x steps steps run.")] = 0.8
    height: Annotated[Height, Field(description="Resize the input to this height first (a multiple of 8). Default: the input's.")] = None
    width: Annotated[Width, Field(description="Resize the input to this width first (a multiple of 8). Default: the input's.")] = None


class UpscaleParams(GenerationParams):
    """Upscale an image four times per side (the SD x4 upscaler), guided by a prompt describing it."""

    image: Annotated[UploadFile, upload("The image to upscale. Its sides are trimmed to multiples of 8; the output is 4x larger per side.")]
    noise_level: Annotated[
        int,
        Field(
            ge=0,
            le=350,
            description="Noise added to the input first: more lets the model invent detail, less stays faithful. At most the model's max_noise_level (350).",
        ),
    ] = 20


class ImageVariationParams(ImagesParams):
    """Variations of an image, without a prompt: the model is conditioned on the image's CLIP embedding."""

    image: Annotated[UploadFile, upload("The image to make variations of (PNG, JPEG, WebP, ...).")]
    guidance_scale: Annotated[Guidance, Field(description="How closely the variations follow the image (1 or less disables guidance).")] = 3.0
    height: Height = None
    width: Width = None


class InpaintingParams(StrengthParams):
    """Repaint the masked part of an image, guided by a prompt."""

    image: Annotated[UploadFile, upload("The image to edit (PNG, JPEG, WebP, ...).")]
    mask_image: Annotated[
        UploadFile,
        upload("White where to repaint, black where to keep. The same size as image, or the same aspect ratio (it is then scaled to the image)."),
    ]
    strength: Annotated[
        Strength,
        Field(description="How much the masked area changes: 1 repaints it from noise, less keeps more of the original. Only strength x steps steps run."),
    ] = 1.0
    height: Annotated[Height, Field(description="Resize image and mask to this height first (a multiple of 8). Default: the image's.")] = None
    width: Annotated[Width, Field(description="Resize image and mask to this width first (a multiple of 8). Default: the image's.")] = None


_VIDEO_SIDE = (
    "to this {side} first; a multiple of the model's size step (64 for SVD, 16 for Wan, 32 for LTX-Video). Default: the image's, trimmed to that step."
)
# Video lengths: Wan takes 4k+1 frames, LTX-Video 8k+1 (the VAE's temporal compression), SVD any.
_FRAMES = "Frames to generate: 4k+1 for Wan (e.g. 81), 8k+1 for LTX-Video (e.g. 161){extra}. Default: the model's, at most the runner's limit, which applies."
VideoFps = Annotated[
    int | None,
    Field(
        ge=1,
        le=60,
        description="Frames per second of the mp4 (LTX-Video and SVD are also conditioned on it). Default: the model's (Wan 16, LTX-Video 25, SVD 7).",
    ),
]
VideoGuidance = Annotated[
    Guidance | None,
    Field(description="How strongly the prompt guides the video (1 or less disables classifier-free guidance). Default: the model's (Wan 5, LTX-Video 3)."),
]


class TextToVideoParams(TaskParams):
    """Generate a video from a text prompt (Wan 2.1/2.2, LTX-Video)."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    height: Annotated[
        Height, Field(description="Height in pixels: a multiple of 16 for Wan, 32 for LTX-Video. Default: the model's (480 for Wan, 512 for LTX-Video).")
    ] = None
    width: Annotated[
        Width, Field(description="Width in pixels: a multiple of 16 for Wan, 32 for LTX-Video. Default: the model's (832 for Wan, 704 for LTX-Video).")
    ] = None
    num_frames: Annotated[int | None, Field(ge=1, le=1000, description=_FRAMES.format(extra=""))] = None
    fps: VideoFps = None
    guidance_scale: VideoGuidance = None
    num_inference_steps: Steps = 50
    seed: Annotated[Seed, Field(description="Seed of the video. Random when unset.")] = None


class ImageToVideoParams(TaskParams):
    """Animate an image: Stable Video Diffusion (no prompt), Wan I2V or LTX-Video (with a prompt)."""

    image: Annotated[UploadFile, upload("The first frame of the video (PNG, JPEG, WebP, ...).")]
    prompt: Annotated[
        str | None, Field(min_length=1, max_length=4000, description="What happens in the video: required by Wan and LTX-Video, refused by SVD.")
    ] = None
    negative_prompt: Annotated[str | None, Field(max_length=4000, description="What to steer away from (Wan, LTX-Video).")] = None
    guidance_scale: VideoGuidance = None
    height: Annotated[Height, Field(description="Resize the image " + _VIDEO_SIDE.format(side="height"))] = None
    width: Annotated[Width, Field(description="Resize the image " + _VIDEO_SIDE.format(side="width"))] = None
    num_frames: Annotated[
        int | None,
        # At least 2: guidance rises from the first frame to the last, and diffusers
        # mis-sizes its batch for a single frame.
        Field(ge=2, le=1000, description=_FRAMES.format(extra=", at least 2, any for SVD (14 for SVD, 25 for SVD-XT)")),
    ] = None
    fps: VideoFps = None
    motion_bucket_id: Annotated[int, Field(ge=0, le=1023, description="SVD only: how much motion, higher moves more (SVD was trained on 0-255).")] = 127
    noise_aug_strength: Annotated[
        float,
        Field(ge=0, le=1, allow_inf_nan=False, description="SVD only: noise added to the image; more frees the video from it, with more motion."),
    ] = 0.02
    decode_chunk_size: Annotated[
        int | None,
        Field(ge=1, le=1000, description="SVD only: frames the VAE decodes at once; fewer saves GPU memory, more is faster. Default: all."),
    ] = None
    num_inference_steps: Annotated[Steps, Field(description="Denoising steps (default 25; 50 for Wan and LTX-Video). The runner's limit applies.")] = 25
    min_guidance_scale: Annotated[Guidance, Field(description="SVD only: guidance on the first frame; it rises linearly over the frames.")] = 1.0
    max_guidance_scale: Annotated[Guidance, Field(description="SVD only: guidance on the last frame (1 or less disables guidance).")] = 3.0
    seed: Annotated[Seed, Field(description="Seed of the video. Random when unset.")] = None

    @model_validator(mode="after")
    def _guidance_rises(self) -> ImageToVideoParams:
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ValueError("min_guidance_scale must not exceed max_guidance_scale")
        return self
