"""Decoding uploads safely (results are encoded by ``encoding``)."""

from __future__ import annotations

import io
import warnings

from PIL import Image

from kubediffusers.runner.errors import InvalidInput

# MPO: multi-picture JPEGs, what many phones write; the first picture is used.
ACCEPTED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"}


def decode_image(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    """Decode an uploaded image to RGB, refusing non-images and images whose
    declared size is too large before any pixel is decompressed."""
    if not data:
        raise InvalidInput(f"{field}: the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidInput(f"{field}: unsupported image format {image.format}")
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(f"{field}: image is {width}x{height}, more than the {max_pixels} pixels allowed for uploads")
            image.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(f"{field}: image is too large to decode safely") from None
    except Exception:  # PIL raises many types for corrupt data
        raise InvalidInput(f"{field}: not a readable image (PNG, JPEG, WebP, ...)") from None
    return image.convert("RGB")
