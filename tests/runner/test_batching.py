"""Dynamic batching: compatible queued requests share one pipeline call, each
keeps its own seeds, and an image made in a batch equals the one made alone."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.runner.helpers import gated, metric, wait_until


def pixels(item: dict[str, Any]) -> np.ndarray:
    data = base64.b64decode(item["url"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


REQUESTS = [
    {"prompt": "a red fox", "seed": 1, "num_images_per_prompt": 2},
    {"prompt": "a lighthouse", "negative_prompt": "fog", "seed": 50},
    {"prompt": "a blue boat", "seed": 7, "num_images_per_prompt": 3},
]
COMMON = {"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 5.0}


def run_concurrently(client: TestClient, bodies: list[dict[str, Any]], path: str = "/text-to-image") -> list[Any]:
    """Queue every request behind a held worker, then let them all go at once."""
    with gated(client) as gate, ThreadPoolExecutor(len(bodies) + 1) as pool:
        warm = pool.submit(client.post, path, json={**COMMON, "prompt": "hold", "seed": 0})
        gate.wait_entered()
        futures = [pool.submit(client.post, path, json={**COMMON, **body}) for body in bodies]
        wait_until(lambda: client.get("/health").json()["queue_depth"] == len(bodies), what="all queued")
        gate.release.set()
        assert warm.result(timeout=60).status_code == 200
        return [f.result(timeout=60) for f in futures]


def test_compatible_requests_share_one_call_and_match_their_solo_images(make_client) -> None:
    batched = make_client(max_batch_size=8, batch_window_ms=50)
    solo = make_client()
    responses = run_concurrently(batched, REQUESTS)
    assert [r.status_code for r in responses] == [200, 200, 200]
    text = batched.get("/metrics").text
    # The held request ran alone; the three queued ones (6 images) in one call.
    assert metric(text, "kubediffusers_batch_requests_count") == 2
    assert metric(text, "kubediffusers_batch_requests_sum") == 4
    assert metric(text, "kubediffusers_batch_images_sum") == 7
    for body, response in zip(REQUESTS, responses, strict=True):
        images = response.json()["images"]
        assert [i["seed"] for i in images] == [body["seed"] + k for k in range(body.get("num_images_per_prompt", 1))]
        alone = solo.post("/text-to-image", json={**COMMON, **body}).json()["images"]
        for in_batch, by_itself in zip(images, alone, strict=True):
            # Batch-size dependent float rounding may flip a rare pixel by one level.
            difference = np.abs(pixels(in_batch) - pixels(by_itself))
            assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_incompatible_requests_are_not_merged(make_client) -> None:
    client = make_client(max_batch_size=8, batch_window_ms=50)
    bodies = [{"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2, "height": 48}, {"prompt": "c", "seed": 3, "num_inference_steps": 1}]
    responses = run_concurrently(client, bodies)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert Image.open(io.BytesIO(base64.b64decode(responses[1].json()["images"][0]["url"].split(",", 1)[1]))).size == (64, 48)
    text = client.get("/metrics").text
    assert metric(text, "kubediffusers_batch_requests_count") == 4  # the held one and three alone
    assert metric(text, "kubediffusers_batch_requests_sum") == 4


def test_batches_stop_at_the_maximum_number_of_images(make_client) -> None:
    client = make_client(max_batch_size=3, batch_window_ms=0)
    bodies = [{"prompt": f"p{i}", "seed": i} for i in range(5)]
    responses = run_concurrently(client, bodies)
    assert all(r.status_code == 200 for r in responses)
    text = client.get("/metrics").text
    # held: 1 call; then 3 + 2
    assert metric(text, "kubediffusers_batch_requests_count") == 3
    assert metric(text, "kubediffusers_batch_images_bucket", le="2.0") == 2


def test_batching_off_by_default(make_client) -> None:
    client = make_client()
    responses = run_concurrently(client, REQUESTS)
    assert all(r.status_code == 200 for r in responses)
    assert metric(client.get("/metrics").text, "kubediffusers_batch_requests_sum") == 4


def test_image_to_image_batches_same_sized_inputs(make_client) -> None:
    client = make_client("image-to-image", max_batch_size=8, batch_window_ms=50)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 10, 200)).save(png, format="PNG")
    with gated(client) as gate, ThreadPoolExecutor(3) as pool:

        def post(seed: int) -> Any:
            return client.post(
                "/image-to-image",
                data={"prompt": "paint", "seed": str(seed), "num_inference_steps": "2", "strength": "0.5"},
                files={"image": ("a.png", png.getvalue(), "image/png")},
            )

        held = pool.submit(post, 0)
        gate.wait_entered()
        futures = [pool.submit(post, s) for s in (1, 2)]
        wait_until(lambda: client.get("/health").json()["queue_depth"] == 2, what="queued")
        gate.release.set()
        assert held.result(60).status_code == 200 and all(f.result(60).status_code == 200 for f in futures)
    assert metric(client.get("/metrics").text, "kubediffusers_batch_requests_sum") == 3
    assert metric(client.get("/metrics").text, "kubediffusers_batch_requests_count") == 2


def test_a_lone_client_does_not_wait_for_the_batch_window(make_client) -> None:
    """The window is for batch mates; with nothing queued and no recent company
    a request starts at once (a 5 s window would otherwise show in every call)."""
    import time

    client = make_client(max_batch_size=8, batch_window_ms=5000)
    started = time.monotonic()
    for seed in range(2):
        assert client.post("/text-to-image", json={**COMMON, "prompt": "alone", "seed": seed}).status_code == 200
    assert time.monotonic() - started < 4.5
