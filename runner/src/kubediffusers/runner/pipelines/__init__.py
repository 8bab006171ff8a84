"""Task pipelines, imported lazily so only the served task's code (and torch)
is loaded, and only when the model loads."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from kubediffusers.runner.settings import Task

if TYPE_CHECKING:
    from kubediffusers.runner.pipelines.base import TaskPipeline

_CLASSES: dict[Task, str] = {
    Task.TEXT_TO_IMAGE: "text_to_image:TextToImagePipeline",
    Task.IMAGE_TO_IMAGE: "image_to_image:ImageToImagePipeline",
    Task.INPAINTING: "inpainting:InpaintingPipeline",
    Task.IMAGE_TO_VIDEO: "image_to_video:ImageToVideoPipeline",
    Task.UPSCALE: "upscale:UpscalePipeline",
    Task.IMAGE_VARIATION: "image_variation:ImageVariationPipeline",
}


def supported_tasks() -> list[Task]:
    return list(_CLASSES)


def pipeline_class(task: Task) -> type[TaskPipeline]:
    try:
        module, name = _CLASSES[task].split(":")
    except KeyError:
        raise ValueError(f"task {task.value!r} is not supported by this runner") from None
    return getattr(import_module(f"{__name__}.{module}"), name)
