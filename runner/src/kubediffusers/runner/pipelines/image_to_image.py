from __future__ import annotations

import inspect
from typing import Any

from PIL import Image

from kubediffusers.runner.inputs import fit_image
from kubediffusers.runner.params import ImageToImageParams
from kubediffusers.runner.pipelines.base import BatchedPipeline
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import Work


class ImageToImagePipeline(BatchedPipeline):
    task = Task.IMAGE_TO_IMAGE
    diffusers_class = "AutoPipelineForImage2Image"

    def prepare(self, params: ImageToImageParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        params = self.with_family_defaults(params, settings)
        return Work.of(params, image=fit_image(images["image"], params.height, params.width, settings, multiple=self.size_multiple))

    def per_item_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        return {"prompt": p.prompt, "negative_prompt": p.negative_prompt, "image": work.images["image"]}

    def shared_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        arguments = {
            "strength": p.strength,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }
        if self.family.transformer:
            # DiT pipelines otherwise generate at their default size, not the input's.
            image = work.images["image"]
            arguments.update(height=image.height, width=image.width)
        if "image_guidance_scale" in inspect.signature(self.pipe.__call__).parameters:
            arguments["image_guidance_scale"] = p.image_guidance_scale  # pix2pix-style checkpoints only
        return self.family_arguments(work, arguments)

    def request_size(self, work: Work) -> tuple[int, int]:
        return work.images["image"].size  # prepare fitted it: the size generated

    def warmup_work(self) -> Work:
        height, width = self.default_size()
        image = Image.new("RGB", (width, height), (127, 127, 127))
        params = ImageToImageParams.model_construct(prompt="warm-up", negative_prompt="", strength=1.0, guidance_scale=1.0, num_inference_steps=1)
        return Work(params=params, seed=0, num_images=1, images={"image": image})
