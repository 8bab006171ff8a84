from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.inputs import check_generated_size
from kubediffusers.runner.params import ImageVariationParams
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import Work


class ImageVariationPipeline(PerSeedPipeline):
    """Variations of an image: the UNet is conditioned on its CLIP image
    embedding (lambdalabs/sd-image-variations-diffusers), no prompt."""

    task = Task.IMAGE_VARIATION
    diffusers_class = "StableDiffusionImageVariationPipeline"
    legacy_callback = True
    warms_request_shapes = True

    def prepare(self, params: ImageVariationParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        # One side alone is held to the limit with the model's native other side (height=4096 alone generated 64x4096).
        check_generated_size(params.height, params.width, self.default_size(), settings)
        # The CLIP feature extractor resizes the image itself; any readable image within the upload limits will do.
        return Work.of(params, image=images["image"])

    def call_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        height, width = self.default_size()
        return {
            "image": work.images["image"],
            "height": p.height or height,
            "width": p.width or width,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }

    def warmup_work(self) -> Work:
        params = ImageVariationParams.model_construct(height=None, width=None, guidance_scale=1.0, num_inference_steps=1)
        image = Image.new("RGB", (64, 64), (127, 127, 127))
        return Work(params=params, seed=0, num_images=1, images={"image": image})
