"""The checkpoint families the runner knows, image and video, one row each, without torch.

A family is recognised from the checkpoint alone: ``model_index.json``'s
``_class_name`` and, where one class covers several models (FLUX.1 schnell
and dev are both ``FluxPipeline``), a value in a component's config. A row
says what the pipelines need to serve it well: the tasks it serves and, where
the registry row's class is not the one, its pipeline class per task; its
denoiser (a UNet or a transformer), the dtype ``auto`` means on a GPU, the
pixel step of its sizes, its request defaults (steps, guidance, text length)
and which request fields do not apply to it.

One table for image and video families: what a row decides (recognition, the
tasks served, the GPU dtype, whether UNet-only options apply) is the same
question for both, and one lookup answers it for ``pipelines.support``,
``pipelines.pipeline_class`` and ``TaskPipeline.load``. The video pipelines
keep their own size and frame rules (``pipelines.prompted_video``).

Adding a family: one row in ``FAMILIES`` (and, for a task the registry row's
class does not serve, a pipeline module under ``pipelines/``), a tiny
architecture in ``dev.tiny`` and its end-to-end test. Single-task families
(SVD, the x4 upscaler, image variation) stay with their task's registry row
(``tasks.TaskSpec.families``); SD 1.x/2.x and SDXL keep their UNet checks in
``pipelines.support``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.settings import RunnerSettings, Task

IMAGE_TASKS = frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING})
_NO_PIPELINES: Mapping[Task, str] = {}


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, ...]  # model_index.json _class_name values
    tasks: frozenset[Task] = IMAGE_TASKS
    denoiser: str = "unet"  # "unet" or "transformer"
    # (component, config key, value) that must all hold: tells apart models saved from one class.
    match: tuple[tuple[str, str, Any], ...] = ()
    # What dtype "auto" means on a GPU: T5, Gemma and Qwen text encoders overflow in float16.
    gpu_dtype: str = "float16"
    patch: int = 1  # latent pixels per token side: sizes are multiples of the VAE factor times this
    # Request defaults, used when the request leaves the field out (None: the params model's).
    steps: int | None = None
    guidance: float | None = None
    max_sequence_length: int | None = None  # text tokens the T5/Qwen encoder reads; None: not settable
    true_cfg: bool = False  # takes true_cfg_scale (real classifier-free guidance beside distilled guidance)
    # Request fields this family's pipelines do not take: refused when a request sets them.
    ignores: tuple[str, ...] = ()
    # Fixed keyword arguments of the diffusers call (e.g. a resizing switch).
    call: tuple[tuple[str, Any], ...] = ()
    # The pipeline scales its output to max_area pixels (FLUX Kontext: a megapixel unless
    # told): the call gets the area of the size the runner chose, so that size is generated.
    area_sized: bool = False
    # Task -> "module:Class" under kubediffusers.runner.pipelines, for tasks the registry
    # row's class does not serve (the video families); imported only when the model loads.
    pipelines: Mapping[Task, str] = field(default_factory=lambda: _NO_PIPELINES)
    example: str = ""  # a published checkpoint, for messages and docs
    notes: str = field(default="", compare=False)  # for people: what the defaults copy

    @property
    def transformer(self) -> bool:
        return self.denoiser == "transformer"


def _video(name: str, classes: tuple[str, ...], pipelines: Mapping[Task, str], example: str) -> Family:
    """A video family: a transformer whose UMT5/T5 text encoder overflows in float16 (bfloat16 on a GPU)."""
    return Family(name, classes, frozenset(pipelines), denoiser="transformer", gpu_dtype="bfloat16", pipelines=pipelines, example=example)


_FLUX_CLASSES = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")

FAMILIES: tuple[Family, ...] = (
    Family("stable-diffusion", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")),
    Family("stable-diffusion-xl", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")),
    Family(
        "flux-schnell",
        _FLUX_CLASSES,
        denoiser="transformer",
        match=(("transformer", "guidance_embeds", False),),
        gpu_dtype="bfloat16",
        patch=2,
        steps=4,
        guidance=0.0,
        max_sequence_length=256,
        true_cfg=True,
        notes="black-forest-labs/FLUX.1-schnell: 4 steps, no guidance, 256 T5 tokens",
    ),
    Family(
        "flux-dev",
        _FLUX_CLASSES,
        denoiser="transformer",
        match=(("transformer", "guidance_embeds", True),),
        gpu_dtype="bfloat16",
        patch=2,
        steps=28,
        guidance=3.5,
        max_sequence_length=512,
        true_cfg=True,
        notes="black-forest-labs/FLUX.1-dev: guidance_scale is the distilled guidance the transformer embeds",
    ),
    Family(
        "flux-kontext",
        ("FluxKontextPipeline",),
        frozenset({Task.IMAGE_TO_IMAGE}),
        denoiser="transformer",
        gpu_dtype="bfloat16",
        patch=2,
        steps=28,
        guidance=2.5,
        max_sequence_length=512,
        true_cfg=True,
        ignores=("strength",),  # Kontext edits from noise with the image as context: the whole schedule runs
        call=(("_auto_resize", False),),  # the runner fits the input (inputs.fit_image), not Kontext's preferred sizes
        area_sized=True,
        notes="black-forest-labs/FLUX.1-Kontext-dev: image editing; diffusers' defaults (28 steps, distilled guidance 2.5)",
    ),
    Family(
        "stable-diffusion-3",
        ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
        denoiser="transformer",
        gpu_dtype="bfloat16",
        patch=2,
        steps=28,
        guidance=7.0,
        max_sequence_length=256,
        notes="stabilityai/stable-diffusion-3.5-*: diffusers' defaults (28 steps, guidance 7)",
    ),
    Family(
        "z-image",
        ("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
        denoiser="transformer",
        gpu_dtype="bfloat16",
        patch=2,
        steps=9,
        guidance=0.0,
        max_sequence_length=512,
        notes="Tongyi-MAI/Z-Image-Turbo: 9 steps (8 transformer calls), no guidance",
    ),
    # Wan 2.1 T2V (1.3B, 14B) and Wan 2.2 T2V A14B (two experts: transformer_2, boundary_ratio).
    _video("wan", ("WanPipeline",), {Task.TEXT_TO_VIDEO: "wan:WanTextToVideoPipeline"}, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
    # Wan 2.1 I2V (480P, 720P: a CLIP image encoder) and Wan 2.2 I2V A14B (no image encoder).
    _video("wan-i2v", ("WanImageToVideoPipeline",), {Task.IMAGE_TO_VIDEO: "wan:WanImageToVideoPipeline"}, "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
    # LTX-Video: one checkpoint (saved as LTXPipeline) serves both tasks.
    _video(
        "ltx",
        ("LTXPipeline", "LTXImageToVideoPipeline"),
        {Task.TEXT_TO_VIDEO: "ltx:LTXTextToVideoPipeline", Task.IMAGE_TO_VIDEO: "ltx:LTXImageToVideoPipeline"},
        "Lightricks/LTX-Video",
    ),
)

# Tasks only families with their own pipelines serve (no diffusers auto pipeline decides for them).
VIDEO_TASKS: frozenset[Task] = frozenset(task for family in FAMILIES for task in family.pipelines)


def _config(snapshot: Path, component: str) -> dict[str, Any]:
    try:
        value = json.loads((snapshot / component / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def family_named(class_name: str, snapshot: Path) -> Family | None:
    """The row of a checkpoint saved from ``class_name``, or None for a family not in the table."""
    for family in FAMILIES:
        if class_name in family.classes and all(_config(snapshot, c).get(k, False) == v for c, k, v in family.match):
            return family
    return None


def family_of(snapshot: Path) -> Family | None:
    try:
        index = json.loads((snapshot / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    name = index.get("_class_name", "") if isinstance(index, dict) else ""
    return family_named(name, snapshot) if isinstance(name, str) else None


def known_families() -> str:
    """For error messages: the image families the table serves."""
    return ", ".join(f.name for f in FAMILIES if f.tasks & IMAGE_TASKS)


def pipeline_of(snapshot: Path, task: Task) -> str | None:
    """The family's own pipeline ("module:Class") for ``task``, or None: the registry row's class serves it."""
    family = family_of(snapshot)
    return None if family is None else family.pipelines.get(task)


def classes_for(task: Task) -> list[str]:
    """Checkpoint classes of the families with their own pipeline for ``task``, for messages."""
    return [family.classes[0] for family in FAMILIES if task in family.pipelines]


UNKNOWN = Family("unknown", ())  # what a checkpoint outside the table is served as (diffusers' own defaults)


def apply_defaults(family: Family, params: Any, settings: RunnerSettings) -> Any:
    """The request with the family's defaults where it left fields out, after
    refusing the fields this family does not take; limits checked again."""
    chosen = params.model_fields_set
    for name in family.ignores:
        if name in chosen:
            raise InvalidInput(f"{name} does not apply to {family.name} checkpoints; leave it out")
    if "max_sequence_length" in chosen and params.max_sequence_length is not None and family.max_sequence_length is None:
        raise InvalidInput(f"max_sequence_length does not apply to {family.name} checkpoints (their text encoder reads a fixed length)")
    if "true_cfg_scale" in chosen and params.true_cfg_scale is not None and not family.true_cfg:
        raise InvalidInput(f"true_cfg_scale applies to FLUX checkpoints only; {family.name} uses guidance_scale")
    if family.true_cfg and params.model_dump(include={"negative_prompt"}).get("negative_prompt") and (params.true_cfg_scale or 1.0) <= 1.0:
        raise InvalidInput(f"{family.name} reads negative_prompt only with true_cfg_scale above 1 (real classifier-free guidance)")
    update: dict[str, Any] = {}
    if family.steps is not None and "num_inference_steps" not in chosen:
        update["num_inference_steps"] = min(family.steps, settings.max_steps)
    if family.guidance is not None and "guidance_scale" not in chosen and "guidance_scale" in type(params).model_fields:
        update["guidance_scale"] = family.guidance
    if "strength" in family.ignores and "strength" in type(params).model_fields:
        update["strength"] = 1.0  # the whole schedule runs
    if not update:
        return params
    # model_copy keeps model_fields_set: what the client chose stays chosen.
    updated = params.model_copy(update=update)
    updated.check_limits(settings)
    return updated


def call_arguments(family: Family, params: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` of the diffusers call with the family's own: its fixed
    ones, text length and true CFG (a batch shares them all: they are part of
    its key), less the fields the family does not take."""
    args = {k: v for k, v in arguments.items() if k not in family.ignores}
    args.update(family.call)
    if family.area_sized and args.get("height") and args.get("width"):
        args["max_area"] = args["height"] * args["width"]
    if family.max_sequence_length is not None:
        args["max_sequence_length"] = getattr(params, "max_sequence_length", None) or family.max_sequence_length
    if family.true_cfg:
        args["true_cfg_scale"] = getattr(params, "true_cfg_scale", None) or 1.0
    return args
