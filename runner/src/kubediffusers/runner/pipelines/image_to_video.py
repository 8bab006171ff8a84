from __future__ import annotations

from typing import Any

from PIL import Image

from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.inputs import check_frames, fit_image
from kubediffusers.runner.params import ImageToVideoParams
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline, unet_size_multiple
from kubediffusers.runner.settings import RunnerSettings, Task
from kubediffusers.runner.types import GeneratedVideo, Work

SVD_FPS = 7  # the frame rate SVD was trained at


class ImageToVideoPipeline(PerSeedPipeline):
    """Stable Video Diffusion: animates one still image."""

    task = Task.IMAGE_TO_VIDEO
    diffusers_class = "StableVideoDiffusionPipeline"
    # SVD's EDM-style Euler schedule (v-prediction, Karras sigmas) is part of the model.
    per_request_scheduler = False

    @property
    def default_frames(self) -> int:
        """Video length the checkpoint was trained for (14 for SVD, 25 for SVD-XT)."""
        return int(getattr(self.pipe.unet.config, "num_frames", 14) or 14)

    @property
    def size_multiple(self) -> int:
        # The spatio-temporal UNet needs latents that halve evenly at every level.
        return unet_size_multiple(self.pipe, self.pipe.vae_scale_factor)

    def prepare(self, params: ImageToVideoParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        prompted = sorted({"prompt", "negative_prompt", "guidance_scale"} & params.model_fields_set)
        if prompted:
            # SVD is conditioned on the image alone (guidance: min_/max_guidance_scale).
            raise InvalidInput(f"{', '.join(prompted)}: Stable Video Diffusion takes no prompt; it animates the image alone")
        params.fps = params.fps or SVD_FPS
        params.num_frames = params.num_frames or self.default_frames
        check_frames(params.num_frames, settings)
        return Work.of(params, image=fit_image(images["image"], params.height, params.width, settings, multiple=self.size_multiple))

    def call_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        image = work.images["image"]
        return {
            "image": image,
            "height": image.height,
            "width": image.width,
            "num_frames": p.num_frames or self.default_frames,
            "num_inference_steps": p.num_inference_steps,
            "min_guidance_scale": p.min_guidance_scale,
            "max_guidance_scale": p.max_guidance_scale,
            "fps": p.fps,
            "motion_bucket_id": p.motion_bucket_id,
            "noise_aug_strength": p.noise_aug_strength,
            "decode_chunk_size": p.decode_chunk_size,
        }

    def collect(self, output: Any, seed: int, work: Work) -> GeneratedVideo:
        return GeneratedVideo(frames=list(output.frames[0]), seed=seed, fps=work.params.fps)

    def warmup_work(self) -> Work:
        height, width = self.default_size()
        params = ImageToVideoParams.model_construct(
            num_frames=2,
            num_inference_steps=1,
            min_guidance_scale=1.0,
            max_guidance_scale=1.0,
            fps=SVD_FPS,
            motion_bucket_id=127,
            noise_aug_strength=0.02,
            decode_chunk_size=2,
        )
        image = Image.new("RGB", (width, height), (127, 127, 127))
        return Work(params=params, seed=0, num_images=1, images={"image": image})
