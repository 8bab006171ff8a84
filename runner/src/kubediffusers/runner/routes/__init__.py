"""The runner's routers: health, the served task's generated route, async jobs.

A compatibility route set (another API's paths with their own request and
response models, e.g. livepeer's or PICO's) is a router module beside
``generate`` that reuses ``delivery`` and the registry, mounted in
``task_routers``.
"""

from __future__ import annotations

from fastapi import APIRouter

from kubediffusers.runner.routes.generate import task_router
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import TASKS, spec_of


def task_routers(task: Task) -> list[APIRouter]:
    """The routers a runner serving ``task`` mounts behind its token."""
    return [task_router(spec_of(task))]


def served_tasks() -> list[Task]:
    return list(TASKS)
