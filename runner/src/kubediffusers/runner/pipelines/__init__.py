"""Task pipelines: the layer that imports torch and diffusers.

Importing this package loads neither: ``pipeline_class`` imports the served
task's module (the registry row's ``pipeline``) when the model loads, so
``import kubediffusers.runner.app`` loads no torch (tests/runner/test_layers.py).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from kubediffusers.runner.families import pipeline_of
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import spec_of

if TYPE_CHECKING:
    from kubediffusers.runner.pipelines.base import TaskPipeline


def pipeline_class(task: Task, snapshot: Path | None = None) -> type[TaskPipeline]:
    """The registry row's class, or the checkpoint family's own (families.FAMILIES) for the task."""
    path = spec_of(task).pipeline
    if snapshot is not None:
        path = pipeline_of(snapshot, task) or path
    module, name = path.split(":")
    cls: type[TaskPipeline] = getattr(import_module(f"{__name__}.{module}"), name)
    return cls
