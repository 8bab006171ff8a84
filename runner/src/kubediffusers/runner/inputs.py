"""Input checks and fitting, settings in: the one home of the size rules.

Every check of what a request will generate (its pixels, its frames) and of
what it uploads lives here, so a new limit is added once. The routes read
uploads through ``read_image``; the pipelines' ``prepare`` fits them and
checks the size actually generated, after fitting, through the functions
below. Nothing here imports torch or knows the runner's context.
"""

from __future__ import annotations

import asyncio

from PIL import Image
from starlette.datastructures import UploadFile

from kubediffusers.runner.errors import InvalidInput, PayloadTooLarge
from kubediffusers.runner.images import decode_image
from kubediffusers.runner.settings import RunnerSettings

# Masks drawn on a scaled preview are accepted if their shape matches this closely.
ASPECT_TOLERANCE = 0.01


async def read_image(upload: UploadFile, field: str, settings: RunnerSettings) -> Image.Image:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{field}: the upload is larger than {settings.max_upload_bytes} bytes")
    # Decoding is CPU work (an 8x8 PNG with a million empty chunks took 2.5 s): keep it off the event loop.
    return await asyncio.to_thread(decode_image, data, field=field, max_pixels=settings.max_upload_pixels)


# Fitting may raise a short side to the size step; beyond this much the picture
# would be stretched, not fitted, so it is refused instead.
MAX_STRETCH = 2.0


def check_size(height: int | None, width: int | None, settings: RunnerSettings, *, multiple: int = 8) -> None:
    """The size a request generates: sides a multiple of the model's step, pixels within the runner's limit."""
    for name, value in (("height", height), ("width", width)):
        if value is not None and value % multiple:
            raise InvalidInput(f"{name} must be a multiple of {multiple} for this model, got {value}")
    if height is not None and width is not None and height * width > settings.max_pixels:
        raise InvalidInput(f"{width}x{height} is {width * height} pixels; this runner allows at most {settings.max_pixels}")


def check_generated_size(height: int | None, width: int | None, native: tuple[int, int], settings: RunnerSettings, *, multiple: int = 8) -> tuple[int, int]:
    """(height, width) a prompt-only request generates: a side not given is the
    model's native one (``native`` is (height, width)), and the pixel limit is
    on the pair, so one huge side alone cannot pass."""
    height, width = height or native[0], width or native[1]
    check_size(height, width, settings, multiple=multiple)
    return height, width


def fitted_size(image: Image.Image, height: int | None, width: int | None, multiple: int) -> tuple[int, int]:
    """(width, height) ``fit_image`` resizes to: both sides given, as asked;
    one side given, the other keeps the aspect ratio; none, the input's size
    trimmed to the step. A side is never below the step."""
    if height and width:
        return width, height
    if height:
        return max(multiple, image.width * height // image.height // multiple * multiple), height
    if width:
        return width, max(multiple, image.height * width // image.width // multiple * multiple)
    return max(multiple, image.width // multiple * multiple), max(multiple, image.height // multiple * multiple)


def fit_image(image: Image.Image, height: int | None, width: int | None, settings: RunnerSettings, *, multiple: int = 8, field: str = "image") -> Image.Image:
    """Resize to the requested size (one side given keeps the aspect ratio), or
    keep the input's size, trimmed to a multiple of ``multiple``. The size
    actually generated (after fitting) is what the pixel limit holds, and an
    aspect ratio the step cannot keep is refused rather than stretched."""
    if not (height or width) and image.width * image.height > settings.max_pixels:
        raise InvalidInput(
            f"the {field} is {image.width}x{image.height}, more than the {settings.max_pixels} pixels this runner generates; pass width and height to resize it"
        )
    check_size(height, width, settings, multiple=multiple)
    size = fitted_size(image, height, width, multiple)
    out_width, out_height = size
    if not (height and width):
        stretch = (out_width / out_height) / (image.width / image.height)
        if not 1 / MAX_STRETCH <= stretch <= MAX_STRETCH:
            raise InvalidInput(
                f"the {field} is {image.width}x{image.height}: an aspect ratio this model cannot generate, since its sides are "
                f"multiples of {multiple} and it would be stretched to {out_width}x{out_height}; crop it, or pass both width and height"
            )
    check_size(out_height, out_width, settings, multiple=multiple)
    return image if size == image.size else image.resize(size)


def match_mask(mask: Image.Image, image: Image.Image) -> Image.Image:
    """The mask as one channel at the image's size, or 400 if it cannot belong to the image."""
    if mask.size != image.size:
        image_ratio, mask_ratio = image.width / image.height, mask.width / mask.height
        if abs(mask_ratio - image_ratio) > ASPECT_TOLERANCE * image_ratio:
            raise InvalidInput(
                f"mask_image is {mask.width}x{mask.height} but image is {image.width}x{image.height}: "
                "the mask must have the image's size or at least its aspect ratio"
            )
        # Nearest keeps the mask's edges hard instead of inventing grey borders.
        mask = mask.resize(image.size, Image.Resampling.NEAREST)
    return mask.convert("L")


def check_upscaled_size(image: Image.Image, factor: int, settings: RunnerSettings) -> None:
    """An upscaler's output, ``factor`` times the fitted input (``fit_image``'s result) per side, within the pixel limit."""
    limit = settings.max_pixels
    out_width, out_height = image.width * factor, image.height * factor
    if out_width * out_height > limit:
        raise InvalidInput(
            f"upscaling {image.width}x{image.height} gives {out_width}x{out_height} = {out_width * out_height} pixels; "
            f"this runner allows at most {limit}, so send an image of at most {limit // factor**2} pixels"
        )


def check_frames(num_frames: int, settings: RunnerSettings) -> None:
    if num_frames > settings.max_video_frames:
        raise InvalidInput(f"num_frames is {num_frames}; this runner allows at most {settings.max_video_frames}")
