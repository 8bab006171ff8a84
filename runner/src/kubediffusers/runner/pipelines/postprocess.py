"""From a pipeline's output tensor to images, with the work on the device.

diffusers' ``output_type="pil"`` turns the decoded batch into float32 numpy on
the CPU and then into PIL images, all on the inference thread (about 3 ms per
512x512 image, 60 ms for a batch of 16, before the next batch can start).
Asking for ``output_type="pt"`` and quantizing there moves one uint8 copy of
the pixels off the device instead; wrapping them as PIL images costs a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def to_images(images: Any) -> list[Image.Image]:
    """A [batch, channels, height, width] tensor in [0, 1] as RGB images (what
    diffusers' numpy_to_pil makes of it: x * 255, rounded); lists pass through."""
    if not isinstance(images, torch.Tensor):
        return list(images)
    if images.device.type == "cpu" and images.dtype == torch.float32:
        # On the CPU this is a few ms of memory-bound work: numpy on this thread (the same
        # float32 arithmetic, rounding half to even like torch.round), not torch's intra-op
        # threads, which on a busy machine wait for a core at every op (kubediffusers-bench output).
        # Scaling writes channels-last once, and clip and round work in that buffer: half the
        # memory passes of clip, scale, round, then transpose (the same values, bit for bit).
        nhwc = images.detach().numpy().transpose(0, 2, 3, 1)
        scaled = np.multiply(nhwc, np.float32(255), out=np.empty(nhwc.shape, np.float32))
        np.clip(scaled, 0, 255, out=scaled)
        pixels = np.rint(scaled, out=scaled).astype(np.uint8)
    else:
        pixels = (images.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(p, mode="RGB") if p.shape[-1] == 3 else Image.fromarray(p[..., 0], mode="L") for p in pixels]
