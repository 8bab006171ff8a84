"""A real runner process whose pipeline does no model compute, for measuring
the serving path alone (``kubediffusers-bench output``).

``python -m kubediffusers.runner.dev.bench.stub`` serves the real app (routes,
queue, worker, batching, encoding, uvicorn) from the same KUBEDIFFUSERS_*
environment as the runner; only the pipeline is replaced by ``StubPipeline``.
Its diffusers call returns a fixed 512x512 image per prompt as a [0, 1] tensor,
as a real pipeline does with ``output_type="pt"``, so the runner's own
post-processing (``pipelines.postprocess``) runs as it would on a GPU.
``STUB_CALL_MS`` and ``STUB_IMAGE_MS`` make each call sleep like a device
would (the GIL is released, as during GPU work): the throughput comparison
needs a pipeline with a cost.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline

SIZE = 512


@cache
def fixed_image() -> Image.Image:
    """A deterministic photo-like 512x512 image: smooth gradients and shapes with a little
    grain (random noise would make PNG and JPEG look worse than on real output)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    red = 0.5 + 0.4 * np.sin(6 * x + 2 * y)
    green = 0.5 + 0.4 * np.cos(4 * y - 3 * x * y)
    blue = np.clip(1.2 - np.hypot(x - 0.6, y - 0.4) * 2, 0, 1)
    grain = np.random.default_rng(0).normal(0, 0.02, (SIZE, SIZE, 3)).astype(np.float32)
    pixels = np.clip(np.stack([red, green, blue], axis=-1) + grain, 0, 1)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), mode="RGB")


@dataclass
class StubOutput:
    images: torch.Tensor
    nsfw_content_detected: None = None


class StubDiffusers:
    """Stands in for the diffusers pipeline object: the same call, fixed output."""

    def __init__(self, call_ms: float = 0.0, image_ms: float = 0.0) -> None:
        self.call_ms, self.image_ms = call_ms, image_ms
        pixels = np.asarray(fixed_image(), dtype=np.float32) / 255
        self._image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()

    def __call__(self, prompt: str | list[str], **kwargs: Any) -> StubOutput:
        count = len(prompt) if isinstance(prompt, list) else 1
        if kwargs.get("output_type") != "pt":
            raise ValueError("the runner asks for output_type='pt' (pipelines.postprocess)")
        callback = kwargs.get("callback_on_step_end")
        if callback is not None:
            callback(self, 0, 0, {})
        time.sleep((self.call_ms + self.image_ms * count) / 1000)
        return StubOutput(self._image.expand(count, -1, -1, -1))


class StubPipeline(TextToImagePipeline):
    """The runner's text-to-image pipeline over ``StubDiffusers``."""

    def default_size(self) -> tuple[int, int]:
        return SIZE, SIZE


def stub_pipeline() -> StubPipeline:
    return StubPipeline(StubDiffusers(float(os.environ.get("STUB_CALL_MS", 0)), float(os.environ.get("STUB_IMAGE_MS", 0))), "cpu")


def serve() -> int:
    """The runner's ``cli.serve`` with the stub pipeline loaded instead of a checkpoint."""
    from kubediffusers.runner import model

    def load_stub(holder: model.ModelHolder) -> None:
        holder.pipeline, holder.revision = stub_pipeline(), "stub"
        holder.state, holder.reason = model.ModelState.OK, "ready"
        holder._metrics.ready.set(1)

    model.ModelHolder._load_blocking = load_stub  # type: ignore[method-assign,assignment]
    from kubediffusers.runner.cli import serve as runner_serve

    return runner_serve()


if __name__ == "__main__":
    sys.exit(serve())
