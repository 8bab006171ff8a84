"""One route module per task; only the served task's router is mounted."""

from __future__ import annotations

from importlib import import_module

from fastapi import APIRouter

from kubediffusers.runner.settings import Task

_ROUTERS: dict[Task, str] = {
    Task.TEXT_TO_IMAGE: "text_to_image",
    Task.IMAGE_TO_IMAGE: "image_to_image",
    Task.INPAINTING: "inpainting",
    Task.IMAGE_TO_VIDEO: "image_to_video",
    Task.UPSCALE: "upscale",
    Task.IMAGE_VARIATION: "image_variation",
}


def task_router(task: Task) -> APIRouter:
    try:
        module = _ROUTERS[task]
    except KeyError:
        raise ValueError(f"task {task.value!r} has no route in this runner") from None
    return import_module(f"{__name__}.{module}").router


def served_tasks() -> list[Task]:
    return list(_ROUTERS)
