"""The output path (issue 16): output_format and quality per request and as the
runner's default, Accept negotiation for raw single images, PNG at the fast
level, encoding on the encoder pool (never the inference thread) and uint8
pixels made on the device."""

from __future__ import annotations

import base64
import io
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kubediffusers.runner import encoding
from kubediffusers.runner.encoding import PNG_COMPRESS_LEVEL, Encoding
from kubediffusers.runner.pipelines.postprocess import to_pixels
from kubediffusers.runner.settings import ImageFormat
from tests.runner.helpers import assert_error, settings_for

SIGNATURES = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}
REQUEST = {"prompt": "a cat", "num_inference_steps": 1, "seed": 3}


def data_url(url: str, fmt: str) -> Image.Image:
    prefix = f"data:image/{fmt};base64,"
    assert url.startswith(prefix), url[:40]
    data = base64.b64decode(url[len(prefix) :])
    assert data.startswith(SIGNATURES[fmt])
    image = Image.open(io.BytesIO(data))
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_format_per_request_in_json(t2i: Any, fmt: str) -> None:
    r = t2i.post("/text-to-image", json={**REQUEST, "num_images_per_prompt": 2, "output_format": fmt, "output_quality": 80})
    assert r.status_code == 200, r.text
    images = [data_url(item["url"], fmt) for item in r.json()["images"]]
    assert [img.size for img in images] == [(64, 64)] * 2


def test_quality_changes_lossy_output_and_the_default_is_png(t2i: Any) -> None:
    sizes = {}
    for quality in (10, 95):
        r = t2i.post("/text-to-image", json={**REQUEST, "output_format": "jpeg", "output_quality": quality})
        sizes[quality] = len(r.json()["images"][0]["url"])
    assert sizes[10] < sizes[95]
    r = t2i.post("/text-to-image", json=REQUEST)
    data_url(r.json()["images"][0]["url"], "png")


@pytest.mark.parametrize(("accept", "fmt"), [("image/jpeg", "jpeg"), ("image/webp", "webp"), ("image/png", "png"), ("image/webp, image/png;q=0.5", "webp")])
def test_accept_picks_the_raw_image_format(t2i: Any, accept: str, fmt: str) -> None:
    r = t2i.post("/text-to-image", json=REQUEST, headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == f"image/{fmt}"
    assert r.content.startswith(SIGNATURES[fmt]) and r.headers["x-seed"] == "3"


def test_accept_json_or_an_unwanted_type_answers_json(t2i: Any) -> None:
    for accept in ("application/json, image/jpeg", "image/jpeg;q=0, */*", "*/*"):
        r = t2i.post("/text-to-image", json=REQUEST, headers={"Accept": accept})
        assert r.headers["content-type"] == "application/json", accept


def test_bad_format_choices_are_clear_errors(t2i: Any) -> None:
    assert_error(t2i.post("/text-to-image", json={**REQUEST, "output_format": "gif"}), 422, "output_format")
    assert_error(t2i.post("/text-to-image", json={**REQUEST, "output_quality": 0}), 422, "output_quality")
    assert_error(t2i.post("/text-to-image", json={**REQUEST, "output_quality": 101}), 422, "output_quality")
    r = t2i.post("/text-to-image", json={**REQUEST, "output_format": "png"}, headers={"Accept": "image/jpeg"})
    assert_error(r, 400, "output_format is png but Accept asks for image/jpeg")
    r = t2i.post("/text-to-image", json={**REQUEST, "num_images_per_prompt": 2}, headers={"Accept": "image/webp"})
    assert_error(r, 400, "Accept: image/webp returns a single image")


def test_the_runner_default_comes_from_its_settings(make_client: Any) -> None:
    client = make_client(output_format="webp", output_quality=50)
    r = client.post("/text-to-image", json=REQUEST)
    data_url(r.json()["images"][0]["url"], "webp")
    # The request's own choice wins over the runner's.
    r = client.post("/text-to-image", json={**REQUEST, "output_format": "jpeg"})
    data_url(r.json()["images"][0]["url"], "jpeg")


def test_bad_runner_defaults_are_refused(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="output_format"):
        settings_for(model_dir, output_format="bmp")
    with pytest.raises(ValueError, match="output_quality"):
        settings_for(model_dir, output_quality=0)


def test_async_jobs_keep_the_requests_format(t2i: Any) -> None:
    r = t2i.post("/text-to-image?async=true", json={**REQUEST, "output_format": "jpeg"})
    assert r.status_code == 202
    job = r.headers["location"]
    from tests.runner.helpers import wait_until

    wait_until(lambda: t2i.get(job).json()["status"] == "done", what="the job")
    data_url(t2i.get(job).json()["result"]["images"][0]["url"], "jpeg")
    raw = t2i.get(job + "/result", headers={"Accept": "image/jpeg"})
    assert raw.headers["content-type"] == "image/jpeg" and raw.content.startswith(SIGNATURES["jpeg"])


def test_png_uses_the_fast_compress_level() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = Encoding(ImageFormat.PNG).encode(image)
    # zlib's header names its level class: 0x01 is "fastest" (levels 0-1), 0x9c the default (6).
    idat = data.index(b"IDAT") + 4
    assert PNG_COMPRESS_LEVEL == 1 and data[idat + 1] == 0x01
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))  # still lossless
    assert zlib.decompress(data[idat:])  # a valid stream


def test_encoding_runs_on_the_encoder_pool_never_the_inference_thread(t2i: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = Encoding.encode

    def recording(self: Encoding, image: Image.Image) -> bytes:
        threads.append(threading.current_thread().name)
        return real(self, image)

    monkeypatch.setattr(Encoding, "encode", recording)
    r = t2i.post("/text-to-image", json={**REQUEST, "num_images_per_prompt": 3, "output_format": "jpeg"})
    assert r.status_code == 200 and len(threads) == 3
    assert all(name.startswith("encoder") for name in threads), threads
    assert encoding.pool()._max_workers >= 1


def test_pixels_are_quantized_like_diffusers_numpy_to_pil() -> None:
    from diffusers.image_processor import VaeImageProcessor

    batch = torch.rand(2, 3, 8, 16)
    ours = [pixels.array() for pixels in to_pixels(batch)]
    theirs = [np.asarray(image) for image in VaeImageProcessor.numpy_to_pil(batch.permute(0, 2, 3, 1).numpy())]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert ours[0].shape == (8, 16, 3) and ours[0].dtype == np.uint8


def test_cpu_quantization_on_one_thread_equals_torchs() -> None:
    """CPU float32 output is quantized with numpy (no intra-op threads); any other tensor with torch, as on a GPU."""
    batch = torch.linspace(-0.2, 1.2, 3 * 3 * 40 * 64).reshape(3, 3, 40, 64)
    batch[0, 0, 0, :8] = torch.tensor([0.5, 1.5, 2.5, 253.5, 254.5, 0.0, 1.0, 127.5]) / 255  # near the rounding ties
    expected = (batch.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for picture, want in zip(to_pixels(batch), expected, strict=True):
        assert np.array_equal(picture.array(), want)
    wide = batch.to(torch.float64)  # not float32: the torch path, in float64
    expected = (wide.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(a.array(), b) for a, b in zip(to_pixels(wide), expected, strict=True))


def test_the_pipeline_asks_diffusers_for_tensors(t2i: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversion to uint8 happens on the model's device, not in diffusers' float32 numpy path."""
    pipeline = t2i.app.state.context.model.pipeline
    seen: list[Any] = []
    real = type(pipeline.pipe).__call__

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("output_type"))
        out = real(self, *args, **kwargs)
        seen.append(type(out.images))
        return out

    monkeypatch.setattr(type(pipeline.pipe), "__call__", recording)
    assert t2i.post("/text-to-image", json=REQUEST).status_code == 200
    assert seen == ["pt", torch.Tensor]


def test_the_inference_thread_hands_results_straight_to_an_encoder(t2i: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync answer is started on the encoder pool by the inference thread (worker.Job.then), and built there:
    the event loop only wakes for the finished answer."""
    from kubediffusers.runner.routes import delivery

    built: list[str] = []
    real = delivery.images_json

    def recording(images: Any, encoding: Any) -> Any:
        built.append(threading.current_thread().name)
        return real(images, encoding)

    monkeypatch.setattr(delivery, "images_json", recording)  # what image_response builds the JSON with
    r = t2i.post("/text-to-image", json={**REQUEST, "num_images_per_prompt": 2})
    assert r.status_code == 200 and len(r.json()["images"]) == 2
    assert len(built) == 1 and built[0].startswith("encoder"), built


def test_encoder_threads_share_a_batch_without_waiting_on_a_full_pool() -> None:
    """Every encoder thread building an answer of several images at once: each takes back
    what no mate started, so none waits on a pool whose threads all wait."""
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    jpeg = Encoding(ImageFormat.JPEG)
    pool = encoding.pool()
    answers = [pool.submit(encoding.encode_all, [image] * 5, jpeg) for _ in range(pool._max_workers * 3)]
    for answer in answers:
        encoded = answer.result(timeout=60)
        assert len(encoded) == 5 and all(data.startswith(SIGNATURES["jpeg"]) for data in encoded)


def test_pixels_wait_for_their_copy_only_when_read() -> None:
    """What an in-flight device copy (postprocess.copy_to_host) looks like to its readers: the size at once,
    the pixels only once the copy is done, waited for once."""
    from kubediffusers.runner.types import GeneratedImage, Pixels

    copied, waits = threading.Event(), []

    def wait() -> None:
        waits.append(threading.current_thread().name)
        assert copied.wait(30)

    array = np.zeros((8, 16, 3), np.uint8)
    array[..., 1] = 200
    item = GeneratedImage(Pixels(array, wait), seed=1)
    assert item.source.size == (16, 8) and waits == []  # nothing read yet
    reader = ThreadPoolExecutor(1, thread_name_prefix="reader").submit(lambda: item.image)
    time.sleep(0.05)
    assert not reader.done()  # reading waits for the copy ...
    copied.set()
    picture = reader.result(timeout=30)
    assert picture.size == (16, 8) and picture.getpixel((3, 3)) == (0, 200, 0)
    assert item.image is picture and waits == ["reader_0"]  # ... once, on the reader's thread
    grey = Pixels(np.full((4, 4, 1), 7, np.uint8)).image()
    assert grey.mode == "L" and grey.getpixel((0, 0)) == 7


def test_the_inference_thread_goes_on_while_an_encoder_waits_for_the_copy(t2i: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's pixels still on their way from the device hold up only its encoder thread:
    the next request's pipeline call runs and answers meanwhile, and the first one's answer
    comes once its copy is done. (On a CPU the copy is a stand-in that a test holds; the
    inference thread never reading the pixels is what lets a GPU start the next call.)"""
    from kubediffusers.runner.pipelines import buckets
    from kubediffusers.runner.types import Pixels

    copied, waited_on = threading.Event(), []
    real = buckets.to_pixels

    def in_flight(images: Any) -> list[Any]:
        done = real(images)
        if waited_on or copied.is_set():
            return done

        def wait() -> None:
            waited_on.append(threading.current_thread().name)
            assert copied.wait(60)

        return [Pixels(p.array(), wait) for p in done]

    monkeypatch.setattr(buckets, "to_pixels", in_flight)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(t2i.post, "/text-to-image", json={**REQUEST, "output_format": "jpeg"})
        deadline = time.monotonic() + 60
        while not waited_on and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waited_on and waited_on[0].startswith("encoder"), waited_on  # not the inference thread
        second = t2i.post("/text-to-image", json={**REQUEST, "seed": 4, "output_format": "jpeg"})
        assert second.status_code == 200 and not first.done()  # served while the first copy is in flight
        copied.set()
        answer = first.result(timeout=60)
    assert answer.status_code == 200
    assert data_url(answer.json()["images"][0]["url"], "jpeg").size == (64, 64)


def test_jpeg_from_pixels_is_pillows_jpeg_without_the_pil_image() -> None:
    """A JPEG encoded straight from uint8 pixels (encoding.jpeg) decodes to what Pillow's own
    JPEG of the same image does, within the rounding of two libjpeg-turbo runs; greyscale too."""
    from kubediffusers.runner.types import Pixels

    y, x = np.mgrid[0:96, 0:128]
    array = np.stack([x * 2, y * 2, (x + y) % 256], axis=-1).astype(np.uint8)
    ours = Image.open(io.BytesIO(Encoding(ImageFormat.JPEG, 90).encode(Pixels(array))))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    theirs = Image.open(buffer)
    assert ours.format == "JPEG" and ours.mode == "RGB" and ours.size == (128, 96)
    assert np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16)).mean() < 1.0
    low = len(Encoding(ImageFormat.JPEG, 20).encode(Pixels(array)))
    assert low < len(Encoding(ImageFormat.JPEG, 95).encode(Pixels(array)))  # quality is honoured
    grey = Image.open(io.BytesIO(Encoding(ImageFormat.JPEG).encode(Pixels(array[..., :1]))))
    assert grey.mode == "L" and abs(int(np.asarray(grey)[10, 10]) - int(array[10, 10, 0])) <= 2
