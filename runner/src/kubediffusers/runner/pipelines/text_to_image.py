from __future__ import annotations

from typing import Any

from kubediffusers.runner.pipelines.base import BatchedPipeline, Work
from kubediffusers.runner.settings import Task


class TextToImagePipeline(BatchedPipeline):
    task = Task.TEXT_TO_IMAGE

    @classmethod
    def auto_class(cls) -> Any:
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image

    def per_item_arguments(self, work: Work) -> dict[str, Any]:
        # "" and None are the same unconditional prompt to diffusers; "" fits a list.
        return {"prompt": work.params.prompt, "negative_prompt": work.params.negative_prompt}

    def shared_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        height, width = self.default_size()
        return {
            "height": p.height or height,
            "width": p.width or width,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }

    def warmup_work(self) -> Work:
        from kubediffusers.runner.routes.text_to_image import TextToImageParams

        return Work(params=TextToImageParams(prompt="warm-up", num_inference_steps=1), seed=0, num_images=1)
