"""Task pipelines that make one diffusers call per requested output.

Pipelines conditioned on an input image (inpainting, video, upscaling) draw
the noise for that image from the first generator of a batch only, so image
i of a batch would not equal image i generated alone with seed + i. Calling
the pipeline once per seed keeps the runner's promise that any output can be
reproduced alone from its seed, at the cost of batching on the GPU.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from kubediffusers.runner import schedulers
from kubediffusers.runner.pipelines.base import TaskPipeline, call_pipeline
from kubediffusers.runner.types import GeneratedImage, StepCallback, Work


class PerSeedPipeline(TaskPipeline):
    # Older diffusers pipelines (upscale, image variation) only report steps
    # through callback(step, timestep, latents), not callback_on_step_end.
    legacy_callback: ClassVar[bool] = False

    def run(self, work: Work, on_step: StepCallback | None = None) -> list[Any]:
        per_call = self.steps_of(work)
        total = per_call * len(work.seeds)
        results: list[Any] = []
        if on_step is not None:
            on_step(0, total)  # pollers see "0 of n" at once, not only after the first (slow) step
        for index, seed in enumerate(work.seeds):
            kwargs = self.call_arguments(work)
            kwargs["generator"] = torch.Generator(device="cpu").manual_seed(seed)
            if on_step is not None:
                kwargs.update(self._progress(on_step, index * per_call, total))
            with schedulers.using(self.pipe, getattr(work.params, "scheduler", None)):
                results.append(self.collect(call_pipeline(self.pipe, kwargs), seed, work))
        return results

    def collect(self, output: Any, seed: int, work: Work) -> Any:
        """Turn one call's output into this task's result item."""
        nsfw = getattr(output, "nsfw_content_detected", None) or [False]
        return GeneratedImage(image=output.images[0], seed=seed, nsfw=bool(nsfw[0]))

    def _progress(self, on_step: StepCallback, done: int, total: int) -> dict[str, Any]:
        if self.legacy_callback:

            def legacy(step: int, timestep: Any, latents: Any) -> None:
                on_step(done + step + 1, total)

            return {"callback": legacy, "callback_steps": 1}

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(done + step + 1, total)
            return tensors

        return {"callback_on_step_end": callback}


def unet_size_multiple(pipe: Any, latent_scale: int) -> int:
    """Smallest pixel step at which every UNet level gets whole latents: the
    VAE's factor times one halving per down block, and at least 8."""
    unet = getattr(pipe, "unet", None)
    levels = len(getattr(getattr(unet, "config", None), "block_out_channels", (0,)))
    return max(8, latent_scale * 2 ** max(0, levels - 1))
