"""Encoding generated images, off the inference thread and in parallel.

A request's format is its ``output_format`` (or, for a raw single image, the
``Accept`` header), else the runner's ``output_format`` setting; quality
likewise. Images are encoded on a pool of threads sized to the machine:
Pillow's encoders release the GIL, so a batch's images encode at once, and the
inference thread only ever hands over uint8 pixels (pipelines.postprocess).

PNG uses compress level 1 (zlib's fastest with real compression): on a
512x512 image it costs about a quarter less CPU than Pillow's default level 6
for files about 10% larger; level 0 saves little more (PNG's filtering stays)
for files 1.5x larger (docs/benchmarks.md, ``kubediffusers-bench output``).
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import simplejpeg
from PIL import Image

from kubediffusers.runner.settings import ImageFormat, RunnerSettings
from kubediffusers.runner.types import Pixels

PNG_COMPRESS_LEVEL = 1
MEDIA_TYPES = {ImageFormat.PNG: "image/png", ImageFormat.JPEG: "image/jpeg", ImageFormat.WEBP: "image/webp"}
FORMAT_OF_MEDIA_TYPE = {media_type: fmt for fmt, media_type in MEDIA_TYPES.items()}


@dataclass(frozen=True)
class Encoding:
    """One request's image encoding."""

    format: ImageFormat = ImageFormat.PNG
    quality: int = 90
    named: bool = False  # the request named the format (it must then agree with Accept)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def encode(self, source: Image.Image | Pixels) -> bytes:
        if self.format is ImageFormat.JPEG and isinstance(source, Pixels):
            return jpeg(source.array(), self.quality)
        image = source.image() if isinstance(source, Pixels) else source
        buffer = io.BytesIO()
        if self.format is ImageFormat.PNG:
            image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        elif self.format is ImageFormat.JPEG:
            # convert() copies even an RGB image (a quarter of JPEG's own cost at 512x512).
            (image if image.mode == "RGB" else image.convert("RGB")).save(buffer, format="JPEG", quality=self.quality)
        else:
            # method 0: libwebp's fastest; the default (4) is several times slower for little gain.
            image.save(buffer, format="WEBP", quality=self.quality, method=0)
        return buffer.getvalue()

    def data_url(self, data: bytes) -> str:
        return f"data:{self.media_type};base64," + base64.b64encode(data).decode("ascii")


def jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """libjpeg-turbo straight from uint8 pixels (simplejpeg): no PIL image, which keeps RGB as
    four bytes a pixel (a copy in, another out), and none of Pillow's save machinery: a
    fifth less time than Pillow for the same encoder (docs/benchmarks.md). 4:2:0 chroma and
    the accurate DCT, as Pillow encodes by default."""
    colorspace = "RGB" if pixels.shape[-1] == 3 else "GRAY"
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace=colorspace, colorsubsampling="420", fastdct=False)


def choose(requested: ImageFormat | None, quality: int | None, settings: RunnerSettings) -> Encoding:
    """The request's choice, else the runner's default."""
    return Encoding(requested or settings.output_format, quality or settings.output_quality)


# Set on the encoder pool's threads (encode_all encodes there too rather than wait on the pool).
_here = threading.local()


def _mark_encoder_thread() -> None:
    _here.encoder = True


@cache
def pool() -> ThreadPoolExecutor:
    """The encoder threads: one per CPU the process may use (never the inference thread)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ThreadPoolExecutor(max_workers=max(1, cpus), thread_name_prefix="encoder", initializer=_mark_encoder_thread)


def encode_all(images: Sequence[Image.Image | Pixels], encoding: Encoding) -> list[bytes]:
    """Every image encoded, in parallel on the encoder pool.

    Called on an encoder thread (the answer is built there: routes.delivery), this
    thread encodes the first image and hands the others to its pool mates,
    taking back each one no mate has started: no thread waits on a pool that is
    busy with waiters, and one image takes no hand-off at all."""
    if not getattr(_here, "encoder", False):
        return list(pool().map(encoding.encode, images))
    others = [pool().submit(encoding.encode, image) for image in images[1:]]
    encoded = [encoding.encode(image) for image in images[:1]]
    for future, image in zip(others, images[1:], strict=True):
        encoded.append(encoding.encode(image) if future.cancel() else future.result())
    return encoded
