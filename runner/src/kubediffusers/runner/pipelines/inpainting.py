from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.pipelines.base import Work
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline
from kubediffusers.runner.settings import Task


class InpaintingPipeline(PerSeedPipeline):
    """Repaints the white part of a mask. AutoPipelineForInpainting picks the
    concrete class from the checkpoint: SD and SDXL inpainting models (9-channel
    UNet) and plain SD/SDXL checkpoints alike."""

    task = Task.INPAINTING

    @classmethod
    def auto_class(cls) -> Any:
        from diffusers import AutoPipelineForInpainting

        return AutoPipelineForInpainting

    def steps_of(self, work: Work) -> int:
        # Like img2img, only strength x steps of the schedule run.
        return max(1, int(work.params.num_inference_steps * work.params.strength))

    def call_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        image = work.images["image"]
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt or None,
            "image": image,
            "mask_image": work.images["mask_image"],
            # Without these the pipeline resizes to the model's native size.
            "height": image.height,
            "width": image.width,
            "strength": p.strength,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }

    def warmup_work(self) -> Work:
        from kubediffusers.runner.routes.inpainting import InpaintingParams

        height, width = self.default_size()
        params = InpaintingParams.model_construct(prompt="warm-up", negative_prompt="", strength=1.0, guidance_scale=1.0, num_inference_steps=1)
        images = {"image": Image.new("RGB", (width, height), (127, 127, 127)), "mask_image": Image.new("L", (width, height), 255)}
        return Work(params=params, seed=0, num_images=1, images=images)
