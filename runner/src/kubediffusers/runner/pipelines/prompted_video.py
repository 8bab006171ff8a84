"""What the prompted video families (Wan, LTX-Video) share.

A family's pipeline says its defaults (size, frames, fps, guidance, steps, as
its diffusers pipeline documents them) and reads its size and frame steps
from the loaded model, so the request is checked against them before any
step runs: a Wan video has 4k+1 frames, an LTX-Video one 8k+1 (the VAE's
temporal compression), and sides are multiples of the VAE's spatial factor
times the transformer's patch. diffusers would silently round frames; the
runner says what it would generate instead.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from PIL import Image

from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.inputs import check_frames, check_size, fit_image
from kubediffusers.runner.params import ImageToVideoParams, TextToVideoParams
from kubediffusers.runner.pipelines.per_seed import PerSeedPipeline
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.types import GeneratedVideo, Work

# ImageToVideoParams fields only Stable Video Diffusion takes.
SVD_ONLY = ("motion_bucket_id", "noise_aug_strength", "decode_chunk_size", "min_guidance_scale", "max_guidance_scale")


class PromptedVideoPipeline(PerSeedPipeline):
    """A video model conditioned on a prompt, generating num_frames = frame_step x k + 1 frames."""

    default_height: ClassVar[int]
    default_width: ClassVar[int]
    default_frames: ClassVar[int]
    default_fps: ClassVar[int]
    default_guidance: ClassVar[float]
    default_steps: ClassVar[int] = 50

    @property
    @abstractmethod
    def frame_step(self) -> int:
        """Frames per latent frame (the VAE's temporal compression)."""

    @property
    @abstractmethod
    def size_multiple(self) -> int:
        """Pixel step of height and width."""

    @property
    def model_class(self) -> str:
        """The loaded diffusers class, for messages (e.g. WanPipeline)."""
        return type(self.pipe).__name__

    def default_size(self) -> tuple[int, int]:
        return self.default_height, self.default_width

    # -- preparing ---------------------------------------------------------

    def fit_frames(self, requested: int | None, settings: RunnerSettings) -> int:
        step = self.frame_step
        if requested is None:
            # The model's length, shortened to the runner's limit: the default never fails.
            limit = min(self.default_frames, settings.max_video_frames)
            return max(1, (limit - 1) // step * step + 1)
        if (requested - 1) % step:
            lower = (requested - 1) // step * step + 1
            raise InvalidInput(f"num_frames must be {step}k+1 for {self.model_class}, e.g. {lower} or {lower + step}; got {requested}")
        check_frames(requested, settings)
        return requested

    def check_side(self, name: str, value: int) -> None:
        if value % self.size_multiple:
            raise InvalidInput(f"{name} must be a multiple of {self.size_multiple} for {self.model_class}, got {value}")

    def prepare_common(self, params: TextToVideoParams | ImageToVideoParams, settings: RunnerSettings) -> None:
        """Fill the family's defaults into the request and check its frames."""
        if "num_inference_steps" not in params.model_fields_set:
            params.num_inference_steps = min(self.default_steps, settings.max_steps)
        params.num_frames = self.fit_frames(params.num_frames, settings)
        params.fps = params.fps or self.default_fps
        if params.guidance_scale is None:
            params.guidance_scale = self.default_guidance

    def prepare_text(self, params: TextToVideoParams, settings: RunnerSettings) -> Work:
        self.prepare_common(params, settings)
        default_height, default_width = self.default_size()
        params.height, params.width = params.height or default_height, params.width or default_width
        self.check_side("height", params.height)
        self.check_side("width", params.width)
        check_size(params.height, params.width, settings)
        return Work.of(params)

    def prepare_image(self, params: ImageToVideoParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        svd_fields = sorted(set(SVD_ONLY) & params.model_fields_set)
        if svd_fields:
            raise InvalidInput(f"{', '.join(svd_fields)}: Stable Video Diffusion parameters; {self.model_class} does not take them")
        if params.prompt is None:
            raise InvalidInput(f"prompt is required: {self.model_class} animates the image as the prompt describes")
        self.prepare_common(params, settings)
        image = fit_image(images["image"], params.height, params.width, settings, multiple=self.size_multiple)
        return Work.of(params, image=image)

    # -- inference ---------------------------------------------------------

    def prompt_arguments(self, work: Work) -> dict[str, Any]:
        p = work.params
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt or None,
            "num_frames": p.num_frames,
            "num_inference_steps": p.num_inference_steps,
            "guidance_scale": p.guidance_scale,
            "output_type": "pil",
        }

    def size_arguments(self, work: Work) -> dict[str, Any]:
        image = work.images.get("image")
        if image is not None:
            return {"image": image, "height": image.height, "width": image.width}
        return {"height": work.params.height, "width": work.params.width}

    def call_arguments(self, work: Work) -> dict[str, Any]:
        return {**self.prompt_arguments(work), **self.size_arguments(work)}

    def collect(self, output: Any, seed: int, work: Work) -> GeneratedVideo:
        return GeneratedVideo(frames=list(output.frames[0]), seed=seed, fps=work.params.fps)

    def warmup_params(self) -> dict[str, Any]:
        """A short, small request: one step, one latent frame past the first."""
        return {
            "prompt": "warm-up",
            "negative_prompt": "",
            "num_frames": self.frame_step + 1,
            "num_inference_steps": 1,
            "guidance_scale": self.default_guidance,
            "fps": self.default_fps,
        }


class PromptedTextToVideo(PromptedVideoPipeline):
    def prepare(self, params: TextToVideoParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        return self.prepare_text(params, settings)

    def warmup_work(self) -> Work:
        side = self.size_multiple
        params = TextToVideoParams.model_construct(height=side, width=side, **self.warmup_params())
        return Work(params=params, seed=0, num_images=1)


class PromptedImageToVideo(PromptedVideoPipeline):
    def prepare(self, params: ImageToVideoParams, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        return self.prepare_image(params, images, settings)

    def warmup_work(self) -> Work:
        side = self.size_multiple
        params = ImageToVideoParams.model_construct(**self.warmup_params())
        image = Image.new("RGB", (side, side), (127, 127, 127))
        return Work(params=params, seed=0, num_images=1, images={"image": image})
