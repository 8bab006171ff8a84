"""From a pipeline's output tensor to images, with the work on the device.

diffusers' ``output_type="pil"`` turns the decoded batch into float32 numpy on
the CPU and then into PIL images, all on the inference thread (about 3 ms per
512x512 image, 60 ms for a batch of 16, before the next batch can start).
Asking for ``output_type="pt"`` and quantizing there moves one uint8 copy of
the pixels off the device instead, asynchronously on a GPU. No PIL image is
made here: the encoders read the pixels (types.Pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from kubediffusers.runner.types import Pixels


def to_pixels(images: Any) -> list[Pixels | Image.Image]:
    """A [batch, channels, height, width] tensor in [0, 1] as uint8 pixels, one ``Pixels`` per
    image (what diffusers' numpy_to_pil makes of it: x * 255, rounded); lists pass through.

    On a CUDA device the copy to host memory is started and not waited for: the
    inference thread returns to the worker, which starts the next call behind it
    on the same stream, and the encoder thread that reads the pixels waits."""
    if not isinstance(images, torch.Tensor):
        return list(images)
    if images.device.type == "cpu" and images.dtype == torch.float32:
        # On the CPU this is memory-bound work: numpy on this thread (the same float32
        # arithmetic, rounding half to even like torch.round), not torch's intra-op threads,
        # which on a busy machine wait for a core at every op (kubediffusers-bench output).
        # One channel plane at a time: scale, clip and round run over contiguous memory in a
        # buffer that stays in the cache, and the cast to uint8 writes the plane into the
        # interleaved pixels. Reading channels-last instead makes numpy gather the input
        # through its strided copy, which cost more than the arithmetic: 1.5 ms per 512x512
        # image against 0.8 ms this way (the same values, bit for bit; docs/benchmarks.md).
        planes = images.detach().numpy()
        batch, channels, height, width = planes.shape
        pixels = np.empty((batch, height, width, channels), np.uint8)
        scaled = np.empty((height, width), np.float32)
        for image, out in zip(planes, pixels, strict=True):
            for channel, plane in enumerate(image):
                np.multiply(plane, np.float32(255), out=scaled)
                np.clip(scaled, 0, 255, out=scaled)
                out[..., channel] = np.rint(scaled, out=scaled)  # the cast to uint8 on assignment
        return [Pixels(p) for p in pixels]
    quantized = (images.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if quantized.device.type == "cuda":
        return copy_to_host(quantized)
    return [Pixels(p) for p in quantized.cpu().numpy()]


def copy_to_host(pixels: torch.Tensor) -> list[Pixels | Image.Image]:
    """Start copying uint8 device pixels into pinned host memory; each image waits for the copy when read.

    The copy is queued on the current stream, after the decode that made them; an event
    recorded behind it says when it is done. torch's pinned allocator keeps the buffer from
    reuse until then even if nobody reads it (a client that left), and the device memory
    is only reused by work queued after the copy on the same stream."""
    host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return [Pixels(p, copied.synchronize) for p in host.numpy()]
