"""Test inputs and decoders for the image and video tasks."""

from __future__ import annotations

import io

import av
from PIL import Image


def png(size: tuple[int, int], color: int | tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def half_mask(size: tuple[int, int]) -> bytes:
    """An inpainting mask: white (repaint) on the right half, black (keep) on the left."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def mp4_frames(data: bytes) -> tuple[list[Image.Image], float]:
    """The decoded frames of an mp4 file and its frame rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [f.to_image() for f in container.decode(stream)], float(stream.average_rate)
