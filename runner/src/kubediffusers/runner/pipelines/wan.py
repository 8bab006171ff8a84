"""Wan 2.1 / 2.2 (Wan-AI): text-to-video (WanPipeline) and image-to-video (WanImageToVideoPipeline).

Defaults are diffusers' (480x832, 81 frames, guidance 5) and Wan's 16 fps.
Sides are multiples of the VAE's spatial factor times the transformer's
patch (16 for Wan 2.1), frames 4k+1 (the VAE's temporal factor).
"""

from __future__ import annotations

from typing import Any

from kubediffusers.runner.pipelines.prompted_video import PromptedImageToVideo, PromptedTextToVideo, PromptedVideoPipeline
from kubediffusers.runner.settings import Task


class WanVideo(PromptedVideoPipeline):
    default_height = 480
    default_width = 832
    default_frames = 81
    default_fps = 16
    default_guidance = 5.0

    @property
    def frame_step(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    @property
    def size_multiple(self) -> int:
        # Wan 2.2 A14B may keep only its low-noise expert in transformer_2.
        transformer: Any = self.pipe.transformer or self.pipe.transformer_2
        return int(self.pipe.vae_scale_factor_spatial) * int(transformer.config.patch_size[1])


class WanTextToVideoPipeline(WanVideo, PromptedTextToVideo):
    task = Task.TEXT_TO_VIDEO
    diffusers_class = "WanPipeline"


class WanImageToVideoPipeline(WanVideo, PromptedImageToVideo):
    task = Task.IMAGE_TO_VIDEO
    diffusers_class = "WanImageToVideoPipeline"
