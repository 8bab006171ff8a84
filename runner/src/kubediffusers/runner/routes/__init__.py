"""The runner's routers: health, the served task's generated route, async jobs,
and the compatibility route sets of other APIs (livepeer's, PICO's).

A compatibility route set (another API's paths with their own request and
response models, e.g. livepeer's or PICO's) is a router module beside
``generate`` that reuses ``delivery`` and the registry, mounted in
``task_routers``.
"""

from __future__ import annotations

from fastapi import APIRouter

from kubediffusers.runner.routes.generate import task_router
from kubediffusers.runner.routes.pico import pico_router
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import TASKS, spec_of


def task_routers(task: Task) -> list[APIRouter]:
    """The routers a runner serving ``task`` mounts behind its token."""
    # livepeer's clients call the native paths, whose answers are in livepeer's shapes in
    # every mode; compatibility livepeer changes statuses and defaults (compat.livepeer), not routes.
    spec = spec_of(task)
    return [task_router(spec), pico_router(spec)]


def served_tasks() -> list[Task]:
    return list(TASKS)
