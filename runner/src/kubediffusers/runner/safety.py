"""The safety checker: real ``nsfw`` flags on every task that returns images.

A CLIP-based checker (diffusers' StableDiffusionSafetyChecker; by default
CompVis/stable-diffusion-safety-checker, as livepeer ai-runner uses) fetched
like any add-on and loaded at start-up when spec.runner.safetyChecker.enabled.
It runs on the worker thread after generation, for the requests that did not
send ``safety_check: false``; a video is flagged when any frame is. Policy
``flag`` reports only; ``blank`` also replaces flagged images (every frame of a
flagged video) with black ones of the same size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from kubediffusers.runner.errors import ModelUnavailable, one_line
from kubediffusers.runner.settings import RunnerSettings, SafetyPolicy
from kubediffusers.runner.snapshots import locate
from kubediffusers.runner.types import GeneratedImage, GeneratedVideo, Work

log = logging.getLogger(__name__)


class SafetyChecker:
    def __init__(self, model: Any, processor: Any, device: str, dtype: torch.dtype, policy: SafetyPolicy) -> None:
        self.model, self.processor, self.device, self.dtype, self.policy = model, processor, device, dtype, policy

    @classmethod
    def load(cls, settings: RunnerSettings, device: str, dtype: torch.dtype) -> SafetyChecker | None:
        if not settings.safety_checker_enabled:
            return None
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        snapshot = locate(settings.model_dir, settings.safety_checker_model_id, "main", what="safety checker").path
        try:
            model = StableDiffusionSafetyChecker.from_pretrained(snapshot, dtype=dtype, use_safetensors=True, local_files_only=True)
            # Without its own preprocessor_config.json, CLIP's defaults (224 px, OpenAI's mean and std) are the checker's.
            has_processor = (snapshot / "preprocessor_config.json").is_file()
            processor = CLIPImageProcessor.from_pretrained(snapshot, local_files_only=True) if has_processor else CLIPImageProcessor()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"safety checker {settings.safety_checker_model_id} is not usable from the cache: {one_line(exc, 300)}") from None
        log.info("safety checker %s loaded (policy %s)", settings.safety_checker_model_id, settings.safety_checker_policy.value)
        return cls(model.to(device).eval(), processor, device, dtype, settings.safety_checker_policy)

    def flags(self, images: list[Image.Image]) -> list[bool]:
        """One flag per image."""
        rgb = [image.convert("RGB") for image in images]
        pixels = self.processor(rgb, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            _, flagged = self.model(clip_input=pixels, images=[np.array(image) for image in rgb])
        return [bool(flag) for flag in flagged]

    def check(self, works: list[Work], results: list[list[Any]]) -> None:
        """Set nsfw on the results of the works that want the check, and apply the policy."""
        for work, items in zip(works, results, strict=True):
            if not getattr(work.params, "safety_check", True) or not items:
                continue
            if isinstance(items[0], GeneratedVideo):
                for video in items:
                    if any(self.flags(video.frames)):
                        video.nsfw = True
                        if self.policy is SafetyPolicy.BLANK:
                            video.frames = [_black(frame) for frame in video.frames]
                continue
            images: list[GeneratedImage] = items
            for item, flag in zip(images, self.flags([i.image for i in images]), strict=True):
                if flag:
                    item.nsfw = True
                    if self.policy is SafetyPolicy.BLANK:
                        item.image = _black(item.image)


def _black(image: Image.Image) -> Image.Image:
    return Image.new(image.mode, image.size)
