"""The video model families beside SVD: which checkpoints serve which video task, with which pipeline.

One row per family, read from the checkpoint's ``model_index.json``
(``_class_name``), the way ``pipelines.support`` reads the image families.
A row names the tasks the family serves and, per task, its pipeline class
("module:Class" under ``kubediffusers.runner.pipelines``, imported only when
the model loads: pipelines import torch). ``pipelines.pipeline_class`` picks
the row's class for the served task; the registry row's class serves every
other checkpoint (SVD for image-to-video). Nothing here imports torch.

Adding a family: a pipeline module under ``pipelines/``, one row here, a tiny
architecture in ``dev.tiny`` and its end-to-end test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubediffusers.runner.settings import Task


@dataclass(frozen=True)
class VideoFamily:
    name: str
    classes: tuple[str, ...]  # model_index.json _class_name values of its checkpoints
    pipelines: Mapping[Task, str]  # task -> "module:Class" under kubediffusers.runner.pipelines
    example: str  # a published checkpoint, for messages and docs

    @property
    def tasks(self) -> frozenset[Task]:
        return frozenset(self.pipelines)


FAMILIES: tuple[VideoFamily, ...] = (
    # Wan 2.1 T2V (1.3B, 14B) and Wan 2.2 T2V A14B (two experts: transformer_2, boundary_ratio).
    VideoFamily(
        "wan",
        ("WanPipeline",),
        {Task.TEXT_TO_VIDEO: "wan:WanTextToVideoPipeline"},
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),
    # Wan 2.1 I2V (480P, 720P: a CLIP image encoder) and Wan 2.2 I2V A14B (no image encoder).
    VideoFamily(
        "wan-i2v",
        ("WanImageToVideoPipeline",),
        {Task.IMAGE_TO_VIDEO: "wan:WanImageToVideoPipeline"},
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    ),
    # LTX-Video: one checkpoint (saved as LTXPipeline) serves both tasks.
    VideoFamily(
        "ltx",
        ("LTXPipeline", "LTXImageToVideoPipeline"),
        {Task.TEXT_TO_VIDEO: "ltx:LTXTextToVideoPipeline", Task.IMAGE_TO_VIDEO: "ltx:LTXImageToVideoPipeline"},
        "Lightricks/LTX-Video",
    ),
)

_BY_CLASS: dict[str, VideoFamily] = {name: family for family in FAMILIES for name in family.classes}

# Tasks only video families serve (no diffusers auto pipeline decides for them).
VIDEO_TASKS: frozenset[Task] = frozenset(task for family in FAMILIES for task in family.tasks)


def family_of(class_name: str) -> VideoFamily | None:
    """The video family of a checkpoint class, or None."""
    return _BY_CLASS.get(class_name)


def pipeline_of(class_name: str, task: Task) -> str | None:
    """The family's pipeline ("module:Class") for ``task``, or None when the class is no video family's."""
    family = family_of(class_name)
    return None if family is None else family.pipelines.get(task)


def classes_for(task: Task) -> list[str]:
    """Checkpoint classes of the video families serving ``task``, for messages."""
    return [family.classes[0] for family in FAMILIES if task in family.pipelines]
