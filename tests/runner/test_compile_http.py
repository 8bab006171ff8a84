"""No compilation in the request path, for real: a runner process compiling with
inductor on the CPU serves requests of every size up to its buckets, alone and
batched, at each of two compiled image sizes, and
``kubediffusers_recompilations_total`` stays 0 after ready; a padded batch
gives its real rows the images an unpadded call of that size gives; a size
warm-up did not cover runs uncompiled (the compiler stance), compiles nothing
and is counted in ``kubediffusers_uncompiled_calls_total``.

Only the VAE decoder is compiled: on this CPU inductor takes 60-90 s per UNet
graph cold (the tiny UNet at batch 1, 2, 4 and 8 with guidance would be five
of them) against about 10-20 s per VAE graph. The UNet's shapes (each bucket
with and without guidance) are what warm-up runs for both
(test_buckets.py::test_warm_up_runs_every_bucket_with_and_without_guidance),
and the padding is the same for both: the calls' batch is the bucket.
"""

from __future__ import annotations

import base64
import io
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.runner.helpers import metric, wait_until
from tests.runner.test_server_process import start

pytestmark = [pytest.mark.slow, pytest.mark.compile]

BODY = {"prompt": "a lighthouse", "num_inference_steps": 2, "guidance_scale": 5.0}


def pixels(item: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["url"].split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def is_ready(url: str) -> bool:
    # Compiling holds the GIL for long stretches: the runner may answer slowly until it is warm.
    try:
        return httpx.get(url + "/readyz", timeout=60).status_code == 200
    except httpx.TransportError:
        return False


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # still compiling: the interpreter waits for the inference thread
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    return out


def recompilations(url: str) -> float:
    return metric(httpx.get(url + "/metrics").text, "kubediffusers_recompilations_total")


def uncompiled(url: str, reason: str = "size") -> float:
    return metric(httpx.get(url + "/metrics").text, "kubediffusers_uncompiled_calls_total", reason=reason)


def post(url: str, images: int, seed: int, **extra: Any) -> list[dict[str, Any]]:
    response = httpx.post(url + "/text-to-image", json={**BODY, "num_images_per_prompt": images, "seed": seed, **extra}, timeout=600)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["images"]
    assert [item["seed"] for item in found] == [seed + i for i in range(images)]
    return found


def start_compiled(model_dir: Path, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    """A runner process that compiles what ``env`` says: batches of up to 3 images, requests of
    up to 4 (larger than a batch): buckets 1, 2, 4; a cold compile cache."""
    return start(
        model_dir,
        KUBEDIFFUSERS_MAX_BATCH_SIZE="3",
        KUBEDIFFUSERS_MAX_IMAGES_PER_REQUEST="4",
        KUBEDIFFUSERS_COMPILE_CACHE_DIR=str(tmp_path / "compile-cache"),  # cold: every graph compiles here
        # No access log: the output is a pipe read only at the end, and minutes of /readyz polls
        # filled it (64 KiB), which froze the runner's event loop on its next log line.
        KUBEDIFFUSERS_LOG_LEVEL="warning",
        **env,
    )


def batched_behind_a_long_request(url: str, *requests: tuple[int, int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The images of ``requests`` (images, seed, other fields), queued together while a long
    request of one image (the same shape) holds the worker: they then share one call."""
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        hold = pool.submit(post, url, 1, 99, num_inference_steps=25)
        wait_until(lambda: httpx.get(url + "/health").json()["activity"] == "Busy", what="the long request running")
        queued = []
        for depth, (images, seed, extra) in enumerate(requests, start=1):
            queued.append(pool.submit(post, url, images, seed, **extra))
            wait_until(lambda depth=depth: httpx.get(url + "/health").json()["queue_depth"] == depth, what=f"request {depth} queued")
        assert httpx.get(url + "/health").json()["activity"] == "Busy", "the long request ended before all were queued"
        found = [item for future in queued for item in future.result(timeout=600)]
        hold.result(timeout=600)
    return found


def test_compiled_runner_never_compiles_after_ready(model_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    proc, url = start_compiled(
        model_dir,
        tmp_path,
        KUBEDIFFUSERS_COMPILE_VAE="true",
        KUBEDIFFUSERS_COMPILE_SIZES='["64x64", "64x48"]',  # the tiny model's own size, and one more
    )
    try:
        wait_until(lambda: is_ready(url), timeout=900, what="compiled warm-up")
        ready = time.monotonic()
        assert recompilations(url) == 0

        alone = {n: post(url, n, seed=10) for n in (1, 2, 3, 4)}  # 3 is padded to 4; 4 is more than a batch
        # Two requests batched into one call of 3 rows, padded to 4.
        batched = batched_behind_a_long_request(url, (1, 10, {}), (2, 11, {}))
        text = httpx.get(url + "/metrics").text
        assert metric(text, "kubediffusers_batch_requests_bucket", le="2.0") - metric(text, "kubediffusers_batch_requests_bucket", le="1.0") == 1
        # Rows 10, 11, 12 of a padded call of 4 are rows 10, 11, 12 of the unpadded call of 4.
        for a, b in zip(batched, alone[4][:3], strict=True):
            assert np.array_equal(pixels(a), pixels(b))
        for n in (1, 2, 3):  # and, from other graphs, the same images up to float rounding
            for a, b in zip(alone[n], alone[4], strict=False):
                assert np.abs(pixels(a) - pixels(b)).max() <= 2
        assert recompilations(url) == 0 and uncompiled(url) == 0
        served = time.monotonic()

        for n in (1, 3):  # the second compiled size, alone and padded
            post(url, n, seed=5, height=48)
        assert recompilations(url) == 0 and uncompiled(url) == 0
        second = time.monotonic()

        post(url, 1, seed=5, height=40)  # a size warm-up did not cover: run eagerly, counted, nothing compiled
        post(url, 2, seed=6, height=40)
        assert recompilations(url) == 0 and uncompiled(url) == 2 and uncompiled(url, "shape") == 0
        print(
            f"compiled warm-up {ready - started:.0f} s, requests {served - ready:.0f} s, "
            f"the second size {second - served:.0f} s, the uncovered size {time.monotonic() - second:.0f} s"
        )
    finally:
        output = stop(proc)
        print(output[-4000:])  # shown when the test fails: what the runner said, warm-up included
    assert output.count("64x40 was not compiled at warm-up") == 1 and "compiling after ready" not in output
