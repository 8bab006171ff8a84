"""The task registry: one row per task says everything the runner derives from it.

A row names the task's request model (``params``), the kind of output it
answers with, its pipeline class (imported only when the model loads, since
pipelines import torch: ``pipelines.pipeline_class``), the tiny architecture tests and ``make run`` build
for it, and the checkpoint families that serve it alone. From the rows come
the generated routes (``routes.generate``), the pipeline to load
(``model``), the task support check (``pipelines.support``), the tiny model
builder's defaults (``dev.tiny``) and the tests' list of tasks.

Adding a task: a ``Task`` member, a params class in ``params``, a pipeline
class under ``pipelines/`` and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kubediffusers.runner import params
from kubediffusers.runner.settings import Task


class Output(StrEnum):
    """How a task's results are answered (routes.delivery and routes.docs map each kind)."""

    IMAGES = "images"  # {"images": [...]}, or one PNG with Accept: image/png
    VIDEO = "video"  # {"frames": [[...]]}, or an mp4 with Accept: video/mp4


class Api(StrEnum):
    """Other projects' HTTP APIs whose clients a runner answers (compat/, routes/livepeer, routes/pico)."""

    LIVEPEER = "livepeer"  # livepeer ai-runner v0.14.1: the native paths, plus its trailing-slash aliases
    PICO = "pico"  # Exoscape/pico: /api/v1/... JSON routes


@dataclass(frozen=True)
class CompatRoute:
    """One route of another API serving this task.

    ``name`` is the API's own name for the route's results (PICO's ImageLayer
    name); ``defaults`` are the API's defaults where they differ from ours,
    by the field names of the API's request (livepeer's: ours; PICO's: its own).
    """

    api: Api
    path: str
    name: str = ""
    defaults: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    summary: str
    params: type[params.TaskParams]
    output: Output
    pipeline: str  # "module:Class" under kubediffusers.runner.pipelines (pipelines.pipeline_class imports it)
    tiny_arch: str  # the tiny architecture (dev.tiny.ARCHITECTURES) of kubediffusers/tiny-<task>
    # Checkpoint classes (model_index.json's _class_name) that serve this task
    # and no other. Empty: diffusers' auto pipeline for the task decides.
    families: tuple[str, ...] = ()
    # Routes of other APIs that serve this task (a livepeer row: the task is one livepeer defines).
    compat: tuple[CompatRoute, ...] = ()

    @property
    def path(self) -> str:
        return "/" + self.task.value

    @property
    def operation_id(self) -> str:
        return self.task.value.replace("-", "_")

    def compat_routes(self, api: Api) -> list[CompatRoute]:
        return [route for route in self.compat if route.api is api]

    @property
    def uploads(self) -> list[str]:
        """The uploaded files (multipart/form-data); none: a JSON body."""
        return self.params.upload_fields()


# livepeer ai-runner's defaults where they differ from ours (its routes' request models, v0.14.1).
_LIVEPEER_SIZE = (("height", 576), ("width", 1024))


def _pico(path: str, name: str, **defaults: object) -> CompatRoute:
    return CompatRoute(Api.PICO, "/api/v1/" + path, name, tuple(defaults.items()))


_ROWS = (
    TaskSpec(
        Task.TEXT_TO_IMAGE,
        "Text to image",
        params.TextToImageParams,
        Output.IMAGES,
        "text_to_image:TextToImagePipeline",
        "sd",
        compat=(
            CompatRoute(Api.LIVEPEER, "/text-to-image/", defaults=_LIVEPEER_SIZE),
            # PICO served one model per path; a runner serves one model on all three.
            _pico("stable-diffusion", "StableDiffusion"),
            _pico("stable-diffusion-2", "StableDiffusion2"),
            _pico("stable-diffusion-xl", "StableDiffusionXL", GuidanceScale=5.0),
        ),
    ),
    TaskSpec(
        Task.IMAGE_TO_IMAGE,
        "Image to image",
        params.ImageToImageParams,
        Output.IMAGES,
        "image_to_image:ImageToImagePipeline",
        "sd",
        compat=(
            CompatRoute(Api.LIVEPEER, "/image-to-image/", defaults=(("num_inference_steps", 100),)),
            _pico("stable-diffusion-image-to-image", "StableDiffusionImageToImage"),
        ),
    ),
    TaskSpec(
        Task.INPAINTING,
        "Inpainting",
        params.InpaintingParams,
        Output.IMAGES,
        "inpainting:InpaintingPipeline",
        "sd-inpainting",
        compat=(_pico("stable-diffusion-inpaint", "StableDiffusionInpaint"),),
    ),
    TaskSpec(
        Task.IMAGE_TO_VIDEO,
        "Image to video",
        params.ImageToVideoParams,
        Output.VIDEO,
        "image_to_video:ImageToVideoPipeline",
        "svd",
        families=("StableVideoDiffusionPipeline",),
        compat=(CompatRoute(Api.LIVEPEER, "/image-to-video/", defaults=(*_LIVEPEER_SIZE, ("fps", 6), ("decode_chunk_size", 4))),),
    ),
    TaskSpec(
        Task.UPSCALE,
        "Upscale x4",
        params.UpscaleParams,
        Output.IMAGES,
        "upscale:UpscalePipeline",
        "sd-x4-upscaler",
        families=("StableDiffusionUpscalePipeline",),
        compat=(CompatRoute(Api.LIVEPEER, "/upscale/", defaults=(("num_inference_steps", 75),)),),
    ),
    TaskSpec(
        Task.IMAGE_VARIATION,
        "Image variation",
        params.ImageVariationParams,
        Output.IMAGES,
        "image_variation:ImageVariationPipeline",
        "sd-image-variation",
        families=("StableDiffusionImageVariationPipeline",),
        compat=(_pico("stable-diffusion-image-variation", "StableDiffusionImageVariation", GuidanceScale=3.0),),
    ),
    # Served by the video families (families.FAMILIES: Wan, LTX-Video); the row's class is Wan's.
    TaskSpec(Task.TEXT_TO_VIDEO, "Text to video", params.TextToVideoParams, Output.VIDEO, "wan:WanTextToVideoPipeline", "wan"),
)

TASKS: dict[Task, TaskSpec] = {row.task: row for row in _ROWS}


def spec_of(task: Task) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"task {task.value!r} is not supported by this runner") from None
