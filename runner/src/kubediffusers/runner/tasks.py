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

    @property
    def path(self) -> str:
        return "/" + self.task.value

    @property
    def operation_id(self) -> str:
        return self.task.value.replace("-", "_")

    @property
    def uploads(self) -> list[str]:
        """The uploaded files (multipart/form-data); none: a JSON body."""
        return self.params.upload_fields()


_ROWS = (
    TaskSpec(Task.TEXT_TO_IMAGE, "Text to image", params.TextToImageParams, Output.IMAGES, "text_to_image:TextToImagePipeline", "sd"),
    TaskSpec(Task.IMAGE_TO_IMAGE, "Image to image", params.ImageToImageParams, Output.IMAGES, "image_to_image:ImageToImagePipeline", "sd"),
    TaskSpec(Task.INPAINTING, "Inpainting", params.InpaintingParams, Output.IMAGES, "inpainting:InpaintingPipeline", "sd-inpainting"),
    TaskSpec(
        Task.IMAGE_TO_VIDEO,
        "Image to video",
        params.ImageToVideoParams,
        Output.VIDEO,
        "image_to_video:ImageToVideoPipeline",
        "svd",
        families=("StableVideoDiffusionPipeline",),
    ),
    TaskSpec(
        Task.UPSCALE,
        "Upscale x4",
        params.UpscaleParams,
        Output.IMAGES,
        "upscale:UpscalePipeline",
        "sd-x4-upscaler",
        families=("StableDiffusionUpscalePipeline",),
    ),
    TaskSpec(
        Task.IMAGE_VARIATION,
        "Image variation",
        params.ImageVariationParams,
        Output.IMAGES,
        "image_variation:ImageVariationPipeline",
        "sd-image-variation",
        families=("StableDiffusionImageVariationPipeline",),
    ),
    # Served by the video families (video_families: Wan, LTX-Video); the row's class is Wan's.
    TaskSpec(Task.TEXT_TO_VIDEO, "Text to video", params.TextToVideoParams, Output.VIDEO, "wan:WanTextToVideoPipeline", "wan"),
)

TASKS: dict[Task, TaskSpec] = {row.task: row for row in _ROWS}


def spec_of(task: Task) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"task {task.value!r} is not supported by this runner") from None
