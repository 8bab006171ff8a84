"""What the layers hand each other, needing neither torch nor HTTP: one
request's work for the GPU thread, its results, and the step callback.

The worker, the job store and the routes import these; only the pipelines
import torch, and only when the model loads.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image


class Seeded(Protocol):
    """What a request model says about its outputs (see params.TaskParams)."""

    seed: int | None

    @property
    def num_outputs(self) -> int: ...


@dataclass
class Work:
    """One validated request, prepared for the model, ready for the GPU thread."""

    params: Any  # the task's params model (params.TaskParams)
    seed: int
    num_images: int
    images: dict[str, Image.Image] = field(default_factory=dict)

    @classmethod
    def of(cls, params: Seeded, **images: Image.Image) -> Work:
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        return cls(params=params, seed=seed, num_images=params.num_outputs, images=images)

    @property
    def seeds(self) -> list[int]:
        # Image i uses seed + i, so any image can be reproduced alone.
        return [self.seed + i for i in range(self.num_images)]


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    nsfw: bool = False


@dataclass
class GeneratedVideo:
    frames: list[Image.Image]
    seed: int
    fps: int
    nsfw: bool = False


class Cancelled(Exception):
    """Raised between denoising steps when nobody waits for the result any more."""


StepCallback = Callable[[int, int], None]  # (steps done, total steps); may raise Cancelled
