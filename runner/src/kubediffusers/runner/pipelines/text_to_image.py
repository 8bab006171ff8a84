from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.inputs import check_generated_size
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.pipelines.base import BatchedPipeline
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import Work


class TextToImagePipeline(BatchedPipeline):
    task = Task.TEXT_TO_IMAGE
    diffusers_class = "AutoPipelineForText2Image"

    def prepare(self, params: TextToImageParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        params = self.with_family_defaults(params, settings)
        # One side given: the other is the model's native one, and the pixel limit is
        # on the pair (height=8192 alone was a 8192x512 image past any limit: minutes of CPU, or an OOM).
        check_generated_size(params.height, params.width, self.default_size(), settings, multiple=self.size_multiple)
        return Work.of(params)

    def per_item_arguments(self, work: Work) -> dict[str, Any]:
        # "" and None are the same unconditional prompt to diffusers; "" fits a list.
        return {"prompt": work.params.prompt, "negative_prompt": work.params.negative_prompt}

    def shared_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        height, width = self.default_size()
        arguments = {
            "height": p.height or height,
            "width": p.width or width,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }
        return self.family_arguments(work, arguments)

    def warmup_work(self) -> Work:
        return Work(params=TextToImageParams(prompt="warm-up", num_inference_steps=1), seed=0, num_images=1)
