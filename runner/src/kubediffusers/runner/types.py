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

import numpy as np
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


class Pixels:
    """One generated image's uint8 pixels in host memory: height x width x channels (3: RGB, 1: L).

    ``wait``, when given, blocks until the device has finished copying them
    there: postprocess.to_pixels starts the copy and returns, so the inference
    thread goes on to the next call while the first reader of the pixels (an
    encoder thread) waits for them instead."""

    __slots__ = ("_array", "_wait")

    def __init__(self, array: np.ndarray, wait: Callable[[], object] | None = None) -> None:
        self._array, self._wait = array, wait

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives it; known before the copy has finished."""
        return self._array.shape[1], self._array.shape[0]

    def array(self) -> np.ndarray:
        if self._wait is not None:
            self._wait()
            self._wait = None
        return self._array

    def image(self) -> Image.Image:
        pixels = self.array()
        return Image.fromarray(pixels, mode="RGB") if pixels.shape[-1] == 3 else Image.fromarray(pixels[..., 0], mode="L")


class GeneratedImage:
    """One image, its seed and whether the safety checker flagged it.

    Made from ``Pixels``, the PIL image is built when ``image`` is first read:
    the encoders take ``source`` as it is (a JPEG is encoded from the pixels
    themselves), so the inference thread never builds one."""

    __slots__ = ("nsfw", "seed", "source")

    def __init__(self, image: Image.Image | Pixels, seed: int, nsfw: bool = False) -> None:
        self.source, self.seed, self.nsfw = image, seed, nsfw

    @property
    def image(self) -> Image.Image:
        if isinstance(self.source, Pixels):
            self.source = self.source.image()
        return self.source

    @image.setter
    def image(self, value: Image.Image) -> None:
        self.source = value

    def __repr__(self) -> str:
        return f"GeneratedImage(size={self.source.size}, seed={self.seed}, nsfw={self.nsfw})"


@dataclass
class GeneratedVideo:
    frames: list[Image.Image]
    seed: int
    fps: int
    nsfw: bool = False


class Cancelled(Exception):
    """Raised between denoising steps when nobody waits for the result any more."""


StepCallback = Callable[[int, int], None]  # (steps done, total steps); may raise Cancelled
