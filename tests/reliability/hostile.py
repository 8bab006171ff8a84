"""Hostile uploads, built in memory: decompression bombs in several formats
(real ones that inflate to hundreds of megapixels, and headers that declare
impossible sizes), truncated images and files that are not images at all."""

from __future__ import annotations

import io
import itertools
import json
import string
import struct

from PIL import Image

BIG = 65_000  # declared side of the header-only bombs: 4.2 gigapixels


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def real_png_bomb() -> bytes:
    """A valid 20000x20000 PNG (400 megapixels; 1.2 GB as RGB) in about 50 kB."""
    return _save(Image.new("1", (20_000, 20_000)), "PNG")


def real_tiff_bomb() -> bytes:
    """A valid 20000x20000 TIFF, CCITT group 4 compressed, a few kB."""
    return _save(Image.new("1", (20_000, 20_000)), "TIFF", compression="group4")


def real_gif_bomb() -> bytes:
    """A valid 12000x12000 GIF (144 megapixels), LZW of one colour."""
    return _save(Image.new("P", (12_000, 12_000)), "GIF")


def png_header_bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib

        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    import zlib

    ihdr = struct.pack(">IIBBBBB", BIG, BIG, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def gif_header_bomb() -> bytes:
    data = bytearray(_save(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", BIG, BIG)  # logical screen size
    return bytes(data)


def bmp_header_bomb() -> bytes:
    data = bytearray(_save(Image.new("RGB", (8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", BIG, BIG)  # BITMAPINFOHEADER width, height
    return bytes(data)


def jpeg_header_bomb() -> bytes:
    data = bytearray(_save(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", BIG, BIG)  # SOF0 height, width
    return bytes(data)


def webp_header_bomb() -> bytes:
    data = bytearray(_save(Image.new("RGB", (16, 16), (200, 10, 10)), "WEBP", lossless=False, quality=50))
    vp8 = data.index(b"VP8 ")
    # The key frame header: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
    assert data[vp8 + 11 : vp8 + 14] == b"\x9d\x01\x2a"
    data[vp8 + 14 : vp8 + 18] = struct.pack("<HH", 0x3FFF, 0x3FFF)  # 16383x16383
    return bytes(data)


def real_png_over_limit() -> bytes:
    """A valid 2048x2048 PNG: under Pillow's own bomb threshold, over the runner's upload limit."""
    return _save(Image.new("1", (2048, 2048)), "PNG")


BOMBS = {
    "png (real, 4 MP, over the runner's limit)": real_png_over_limit,
    "png (real, 400 MP)": real_png_bomb,
    "tiff (real, 400 MP)": real_tiff_bomb,
    "gif (real, 144 MP)": real_gif_bomb,
    "png (header)": png_header_bomb,
    "gif (header)": gif_header_bomb,
    "bmp (header)": bmp_header_bomb,
    "jpeg (header)": jpeg_header_bomb,
    "webp (header)": webp_header_bomb,
}


def truncated(fmt: str, keep: float = 0.5) -> bytes:
    import random

    rng = random.Random(7)
    image = Image.frombytes("RGB", (64, 64), bytes(rng.randrange(256) for _ in range(64 * 64 * 3)))  # noise: no tiny encodings
    full = _save(image, fmt)
    return full[: int(len(full) * keep)]


NOT_IMAGES = {
    "text": b"hello, this is not an image\n" * 10,
    "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>',
    "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "zip": b"PK\x03\x04" + b"\0" * 60,
    "elf": b"\x7fELF\x02\x01\x01" + b"\0" * 60,
    "ico": _save(Image.new("RGB", (16, 16)), "ICO"),  # an image, but not a format the runner takes
    "png magic only": b"\x89PNG\r\n\x1a\n",
    "nul bytes": b"\0" * 4096,
}


def unknown_key_flood(limit: int = 1024 * 1024, prompt: str = "x") -> tuple[bytes, int]:
    """The JSON body with the most unknown keys that fits in ``limit`` bytes (the runner's
    JSON cap): a valid prompt, then every 1-, 2- and 3-character key with the value 0,
    compactly written (131 566 keys in 1 MiB). One validation error per key.
    Returns (body, number of unknown keys)."""
    alphabet = string.ascii_letters + string.digits
    parts = [json.dumps({"prompt": prompt}, separators=(",", ":"))[1:-1]]
    size = len(parts[0]) + 2
    for length in (1, 2, 3):
        for key in itertools.product(alphabet, repeat=length):
            item = f'"{"".join(key)}":0'
            if size + len(item) + 1 > limit:
                return ("{" + ",".join(parts) + "}").encode(), len(parts) - 1
            parts.append(item)
            size += len(item) + 1
    raise AssertionError("limit larger than the keys of up to 3 characters")
