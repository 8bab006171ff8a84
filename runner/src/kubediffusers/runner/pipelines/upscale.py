from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.inputs import check_upscaled_size, fit_image
from kubediffusers.runner.params import UpscaleParams
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import Work


class UpscalePipeline(PerSeedPipeline):
    """The Stable Diffusion x4 upscaler, guided by a prompt."""

    task = Task.UPSCALE
    diffusers_class = "StableDiffusionUpscalePipeline"
    legacy_callback = True

    @property
    def factor(self) -> int:
        """How many times larger each side of the output is (4 for the x4 upscaler)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def max_noise_level(self) -> int:
        return int(self.pipe.config.max_noise_level)

    def prepare(self, params: UpscaleParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        if params.noise_level > self.max_noise_level:
            raise InvalidInput(f"noise_level is {params.noise_level}; this model allows at most {self.max_noise_level}")
        # The output is what the limit holds: `factor` times the input as fitted (a side under 8 becomes 8).
        image = fit_image(images["image"], None, None, settings)
        check_upscaled_size(image, self.factor, settings)
        return Work.of(params, image=image)

    def call_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt or None,
            "image": work.images["image"],
            "noise_level": p.noise_level,
            "guidance_scale": p.guidance_scale,
            "num_inference_steps": p.num_inference_steps,
        }

    def warmup_work(self) -> Work:
        # default_size is the output the UNet was trained for; the input is `factor` times smaller.
        height, width = (max(8, side // self.factor) for side in self.default_size())
        params = UpscaleParams.model_construct(prompt="warm-up", negative_prompt="", noise_level=20, guidance_scale=1.0, num_inference_steps=1)
        image = Image.new("RGB", (width, height), (127, 127, 127))
        return Work(params=params, seed=0, num_images=1, images={"image": image})
