"""LTX-Video (Lightricks): one checkpoint serves text-to-video (LTXPipeline) and image-to-video (LTXImageToVideoPipeline).

Defaults are diffusers' (512x704, 161 frames, 25 fps, guidance 3). The
frame rate also conditions the transformer's rotary embedding, so it is
passed as ``frame_rate``. Sides are multiples of 32 (diffusers checks them),
frames 8k+1 (the VAE's temporal compression).
"""

from __future__ import annotations

from typing import Any

from kubediffusers.runner.pipelines.prompted_video import PromptedImageToVideo, PromptedTextToVideo, PromptedVideoPipeline
from kubediffusers.runner.settings import Task
from kubediffusers.runner.types import Work

LTX_SIDE_MULTIPLE = 32  # LTXPipeline.check_inputs refuses anything else


class LTXVideo(PromptedVideoPipeline):
    default_height = 512
    default_width = 704
    default_frames = 161
    default_fps = 25
    default_guidance = 3.0

    @property
    def frame_step(self) -> int:
        return int(self.pipe.vae_temporal_compression_ratio) * int(self.pipe.transformer_temporal_patch_size)

    @property
    def size_multiple(self) -> int:
        latent = int(self.pipe.vae_spatial_compression_ratio) * int(self.pipe.transformer_spatial_patch_size)
        return max(LTX_SIDE_MULTIPLE, latent)

    def call_arguments(self, work: Work) -> dict[str, Any]:
        return {**super().call_arguments(work), "frame_rate": work.params.fps}


class LTXTextToVideoPipeline(LTXVideo, PromptedTextToVideo):
    task = Task.TEXT_TO_VIDEO
    diffusers_class = "LTXPipeline"


class LTXImageToVideoPipeline(LTXVideo, PromptedImageToVideo):
    task = Task.IMAGE_TO_VIDEO
    diffusers_class = "LTXImageToVideoPipeline"
