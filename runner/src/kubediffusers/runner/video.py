"""Encoding generated frames as an mp4 file (H.264, playable in browsers)."""

from __future__ import annotations

import io

from PIL import Image

# Fragmented MP4 with the index (an empty moov) first: playback starts while
# downloading, as faststart gives, but written in one pass to memory. faststart
# rewrites a finished file, which needs a temp file: an mp4 answer then failed
# with a disk-full temp directory after the whole video was generated.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


def encode_mp4(frames: list[Image.Image], fps: int, crf: int = 18) -> bytes:
    """H.264 in yuv420p, the combination every player decodes. crf 18 is
    visually lossless; the index comes first so playback can start while
    downloading. Encoded in memory: no temp file."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    width, height = frames[0].size
    # yuv420p subsamples chroma 2x2, so both sides must be even.
    width, height = width // 2 * 2, height // 2 * 2
    buffer = io.BytesIO()
    _write(buffer, frames, fps, width, height, crf)
    return buffer.getvalue()


def _write(out: io.BytesIO, frames: list[Image.Image], fps: int, width: int, height: int, crf: int) -> None:
    import av  # PyAV bundles its own FFmpeg with libx264

    with av.open(out, mode="w", format="mp4", options={"movflags": MOVFLAGS}) as container:
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
