from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.inputs import fit_image, match_mask
from kubediffusers.runner.params import InpaintingParams
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import Work


class InpaintingPipeline(PerSeedPipeline):
    """Repaints the white part of a mask. AutoPipelineForInpainting picks the
    concrete class from the checkpoint: SD and SDXL inpainting models (9-channel
    UNet) and plain SD/SDXL checkpoints alike."""

    task = Task.INPAINTING
    diffusers_class = "AutoPipelineForInpainting"
    warms_request_shapes = True

    def prepare(self, params: InpaintingParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        params = self.with_family_defaults(params, settings)
        image = images["image"]
        mask = match_mask(images["mask_image"], image)
        picture = fit_image(image, params.height, params.width, settings, multiple=self.size_multiple)
        if mask.size != picture.size:
            mask = mask.resize(picture.size, Image.Resampling.NEAREST)
        return Work.of(params, image=picture, mask_image=mask)

    def call_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        image = work.images["image"]
        arguments = {
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
        return self.family_arguments(work, arguments)

    def request_size(self, work: Work) -> tuple[int, int]:
        return work.images["image"].size  # prepare fitted it: the size generated

    def warmup_work(self) -> Work:
        height, width = self.default_size()
        params = InpaintingParams.model_construct(prompt="warm-up", negative_prompt="", strength=1.0, guidance_scale=1.0, num_inference_steps=1)
        images = {"image": Image.new("RGB", (width, height), (127, 127, 127)), "mask_image": Image.new("L", (width, height), 255)}
        return Work(params=params, seed=0, num_images=1, images=images)
