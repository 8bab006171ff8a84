"""Which checkpoints can serve which task, read from the checkpoint itself.

A checkpoint's model_index.json names the pipeline it was saved from
(``_class_name``). Families we know are matched against the task before any
weight is loaded, so a mismatch (a video model deployed for text-to-image) is a
one-line not-ready reason instead of a stack trace from deep inside diffusers.
The families are the rows of ``families.FAMILIES`` and the registry's
single-task families; a checkpoint of any other family is not served.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.families import FAMILIES, VIDEO_TASKS, classes_for, family_named, known_families
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import TASKS

# Tasks with a diffusers auto pipeline: it picks the concrete class from the checkpoint.
_IMAGE_TASKS = frozenset(spec.task for spec in TASKS.values() if not spec.families and spec.task not in VIDEO_TASKS)

# Text-to-image families. When their UNet takes the 9-channel inpainting input
# (sd-inpainting, SDXL inpainting 0.1) the checkpoint serves inpainting only.
# (SD 1.x, SD 2.x, sd-turbo, SDXL, SDXL-Turbo, the SDXL refiner and their inpainting models.)
_TEXT_TO_IMAGE_FAMILIES = {name for row in FAMILIES if not row.transformer for name in row.classes}

# Families with exactly one task (the registry rows' ``families``): no auto
# pipeline maps them anywhere else.
_SINGLE_TASK_FAMILIES = {family: spec.task for spec in TASKS.values() for family in spec.families}

# What each task without an auto pipeline needs, for the error message.
_REQUIRED_FAMILY = {task: family for family, task in _SINGLE_TASK_FAMILIES.items()}
for _task in VIDEO_TASKS:  # the video families (families.FAMILIES) serving the task too
    _names = ([_REQUIRED_FAMILY[_task]] if _task in _REQUIRED_FAMILY else []) + classes_for(_task)
    _REQUIRED_FAMILY[_task] = " or ".join([", ".join(_names[:-1]), _names[-1]] if len(_names) > 1 else _names)

INPAINTING_UNET_CHANNELS = 9  # latents 4 + mask 1 + masked-image latents 4


def checkpoint_class(snapshot: Path) -> str:
    """The pipeline class the checkpoint was saved from ('' when absent)."""
    try:
        index = json.loads((snapshot / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelUnavailable(f"model_index.json is unreadable: {exc}") from None
    name = index.get("_class_name", "")
    return name if isinstance(name, str) else ""


def unet_in_channels(snapshot: Path) -> int | None:
    try:
        config = json.loads((snapshot / "unet" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("in_channels")
    return value if isinstance(value, int) else None


def has_component(snapshot: Path, name: str) -> bool:
    """Whether model_index.json lists the component with a class (not [null, null])."""
    try:
        value = json.loads((snapshot / "model_index.json").read_text()).get(name)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(value, list) and len(value) == 2 and value[1] is not None


def tasks_of(snapshot: Path) -> frozenset[Task] | None:
    """Tasks the checkpoint can serve, or None for a family we do not know."""
    family = checkpoint_class(snapshot)
    if family in _SINGLE_TASK_FAMILIES:
        return frozenset({_SINGLE_TASK_FAMILIES[family]})
    if family in _TEXT_TO_IMAGE_FAMILIES:
        if unet_in_channels(snapshot) == INPAINTING_UNET_CHANNELS:
            return frozenset({Task.INPAINTING})
        if family.startswith("StableDiffusionXL") and not has_component(snapshot, "text_encoder"):
            # The SDXL refiner: only the second text encoder; it refines an image, it cannot start from noise.
            return frozenset({Task.IMAGE_TO_IMAGE, Task.INPAINTING})
        return _IMAGE_TASKS
    row = family_named(family, snapshot)
    return row.tasks if row is not None else None


def check_task_support(snapshot: Path, task: Task, model_id: str) -> None:
    """Raise ModelUnavailable with a one-line reason if the checkpoint cannot serve ``task``."""
    family = checkpoint_class(snapshot) or "no _class_name"
    supported = tasks_of(snapshot)
    if supported is None:
        if task in _IMAGE_TASKS:
            raise ModelUnavailable(f"model {model_id} ({family}) is of a family this runner does not know; it serves {known_families()}")
        raise ModelUnavailable(f"model {model_id} ({family}) cannot serve {task.value}: it needs a {_REQUIRED_FAMILY[task]} checkpoint")
    if task not in supported:
        serves = ", ".join(sorted(t.value for t in supported))
        hint = " (an inpainting checkpoint: its UNet takes a mask)" if supported == {Task.INPAINTING} else ""
        raise ModelUnavailable(f"model {model_id} ({family}) cannot serve {task.value}; it serves {serves}{hint}")
