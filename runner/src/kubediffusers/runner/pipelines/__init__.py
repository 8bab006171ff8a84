"""Task pipelines: the layer that imports torch and diffusers.

Importing this package loads neither: ``pipeline_class`` imports the served
task's module (the registry row's ``pipeline``) when the model loads, so
``import kubediffusers.runner.app`` loads no torch (tests/runner/test_layers.py).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import spec_of

if TYPE_CHECKING:
    from kubediffusers.runner.pipelines.base import TaskPipeline


def pipeline_class(task: Task) -> type[TaskPipeline]:
    module, name = spec_of(task).pipeline.split(":")
    cls: type[TaskPipeline] = getattr(import_module(f"{__name__}.{module}"), name)
    return cls
