"""Encoding generated frames as an mp4 file (H.264, playable in browsers)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image


def encode_mp4(frames: list[Image.Image], fps: int, crf: int = 18) -> bytes:
    """H.264 in yuv420p, the combination every player decodes. crf 18 is
    visually lossless; faststart puts the index first so playback can start
    while downloading."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    width, height = frames[0].size
    # yuv420p subsamples chroma 2x2, so both sides must be even.
    width, height = width // 2 * 2, height // 2 * 2
    # faststart rewrites the file once written, which needs a real file, not a buffer.
    with tempfile.TemporaryDirectory(prefix="kubediffusers-video-") as tmp:
        path = Path(tmp) / "video.mp4"
        _write(path, frames, fps, width, height, crf)
        return path.read_bytes()


def _write(path: Path, frames: list[Image.Image], fps: int, width: int, height: int, crf: int) -> None:
    import av  # PyAV bundles its own FFmpeg with libx264

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in frames:
            if image.size != (width, height):
                image = image.crop((0, 0, width, height))
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
