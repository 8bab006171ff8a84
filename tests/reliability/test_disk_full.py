"""A full temp directory, against a real runner process (issue 12, point 10):
an upload that must be spooled to disk is a 507 that says so (it was a 400
blaming the client), and an mp4 answer needs no temp file at all (it was a
500 after the whole video was generated).

The temp directory is a real 2 MiB tmpfs, filled up; mounting one needs root.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.reliability.procs import RunnerProcess, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mount = tmp_path_factory.mktemp("full-tmp")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.fixture(scope="module")
def video_runner(reliability_models: Path, full_tmp: Path) -> Iterator[RunnerProcess]:
    env = {"TMPDIR": str(full_tmp), "KUBEDIFFUSERS_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)}
    with RunnerProcess(reliability_models, "image-to-video", env=env) as runner:
        fill(full_tmp)
        yield runner


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG of random pixels: incompressible, so it is as large as its pixels."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_upload_spooled_to_a_full_disk_is_507(video_runner: RunnerProcess) -> None:
    image = noisy_png((700, 700))  # 1.4 MB: past starlette's 1 MiB in-memory threshold
    assert len(image) > 1024 * 1024
    r = httpx.post(video_runner.url + "/image-to-video", data={"num_frames": "2"}, files={"image": ("in.png", image, "image/png")}, timeout=120)
    assert r.status_code == 507, (r.status_code, r.text[:300])
    assert "temp directory is full" in r.json()["detail"]["msg"] and r.headers["retry-after"]


def test_an_mp4_answer_needs_no_temp_file(video_runner: RunnerProcess) -> None:
    files = {"image": ("in.png", png_bytes((64, 64)), "image/png")}
    data = {"num_frames": "2", "num_inference_steps": "1", "seed": "1"}
    r = httpx.post(video_runner.url + "/image-to-video", data=data, files=files, headers={"Accept": "video/mp4"}, timeout=120)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "video/mp4"
    head = r.content[:64]
    assert b"ftyp" in head and r.content.find(b"moov") < r.content.find(b"mdat")  # the index first: playable while downloading
