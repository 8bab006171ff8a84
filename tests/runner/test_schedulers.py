"""Per-request schedulers (runner/schedulers.py): a fixed list, those the loaded
checkpoint's scheduler is compatible with; the checkpoint's own by default;
never mixed in one batch; an unknown name is a 400 listing the allowed ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner import schedulers
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.types import Work
from tests.runner.helpers import assert_error, decode, gated, metric, png, wait_until

BODY = {"prompt": "a red cube", "height": 64, "width": 64, "num_inference_steps": 2, "seed": 5}


def image_of(client: TestClient, **extra: Any) -> bytes:
    r = client.post("/text-to-image", json={**BODY, **extra})
    assert r.status_code == 200, r.text
    return decode(r.json()["images"][0]["url"]).tobytes()


def test_the_list_is_what_the_checkpoint_is_compatible_with(t2i: TestClient) -> None:
    pipeline = t2i.app.state.context.model.pipeline  # type: ignore[attr-defined]
    assert type(pipeline.pipe.scheduler).__name__ == "EulerDiscreteScheduler"  # the tiny model's own
    assert schedulers.allowed(pipeline) == list(schedulers.SCHEDULERS)


def test_unknown_or_incompatible_names_are_400_listing_the_allowed(t2i: TestClient) -> None:
    r = t2i.post("/text-to-image", json={**BODY, "scheduler": "k-lms-turbo"})
    assert_error(r, 400, "allowed: euler, euler-ancestral, dpm++-2m, dpm++-2m-karras, ddim, unipc, lcm")


def test_the_default_is_the_checkpoints_own_and_a_choice_changes_the_image(t2i: TestClient) -> None:
    pipeline = t2i.app.state.context.model.pipeline  # type: ignore[attr-defined]
    own = pipeline.pipe.scheduler
    default = image_of(t2i)
    # Euler rebuilt from the checkpoint's config is the checkpoint's own: the same image.
    assert image_of(t2i, scheduler="euler") == default
    others = {name: image_of(t2i, scheduler=name) for name in ("ddim", "dpm++-2m-karras", "unipc")}
    assert all(image != default for image in others.values())
    assert len(set(others.values())) == 3
    assert pipeline.pipe.scheduler is own  # put back after each request
    assert image_of(t2i, scheduler="ddim") == others["ddim"]  # reproducible


def test_a_failed_call_puts_the_checkpoints_scheduler_back(t2i: TestClient) -> None:
    pipeline = t2i.app.state.context.model.pipeline  # type: ignore[attr-defined]
    own = pipeline.pipe.scheduler
    with pytest.raises(RuntimeError), schedulers.using(pipeline.pipe, "ddim"):
        assert type(pipeline.pipe.scheduler).__name__ == "DDIMScheduler"
        raise RuntimeError("the call failed")
    assert pipeline.pipe.scheduler is own


def test_requests_with_different_schedulers_never_share_a_batch(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_batch_size=8, batch_window_ms=200)
    pipeline = client.app.state.context.model.pipeline
    work = lambda name: Work(params=TextToImageParams(**BODY, scheduler=name), seed=1, num_images=1)  # noqa: E731
    assert pipeline.batch_key(work(None)) != pipeline.batch_key(work("ddim")) != pipeline.batch_key(work("unipc"))
    assert pipeline.batch_key(work("ddim")) == pipeline.batch_key(work("ddim"))
    # Four queued requests, two schedulers: two pipeline calls of two requests each.
    bodies = [{**BODY, "seed": i, "scheduler": name} for i, name in enumerate(["ddim", "unipc", "ddim", "unipc"])]
    # The gate opens before the pool waits for its futures, so a failure here fails the test instead of hanging it.
    with ThreadPoolExecutor(len(bodies) + 1) as pool, gated(client) as gate:
        first = pool.submit(client.post, "/text-to-image", json={**BODY, "prompt": "first"})
        gate.wait_entered()
        futures = [pool.submit(client.post, "/text-to-image", json=body) for body in bodies]
        wait_until(lambda: client.app.state.context.worker.depth >= len(bodies), timeout=30)
        gate.release.set()
        assert first.result().status_code == 200
        assert all(f.result().status_code == 200 for f in futures)
    text = client.get("/metrics").text
    # Batches: the lone first request, then one per scheduler (requests per call observed).
    assert metric(text, "kubediffusers_batch_requests_count") == 3
    assert metric(text, "kubediffusers_batch_requests_sum") == 5


def test_a_model_that_keeps_its_scheduler_refuses_every_name(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("image-to-video")
    files = {"image": ("first.png", png((32, 32)), "image/png")}
    r = client.post("/image-to-video", data={"num_inference_steps": "1", "num_frames": "2", "scheduler": "euler"}, files=files)
    assert_error(r, 400, "none (this model keeps its own scheduler)")
