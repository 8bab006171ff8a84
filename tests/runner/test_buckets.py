"""Compiled batch sizes (pipelines.buckets): which sizes, how calls are padded or
split, that padding changes no real image, and the recompilation counter.

These run the tiny model eagerly (buckets forced on the loaded pipeline) so
they are quick; test_compile_http.py compiles for real with inductor."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry, Counter

from kubediffusers.runner.pipelines import base
from kubediffusers.runner.pipelines.buckets import Buckets, allow_bucket_graphs, default_sizes
from kubediffusers.runner.pipelines.recompiles import RecompileWatch
from kubediffusers.runner.settings import ConfigurationError, load_settings
from tests.runner.helpers import settings_for

BODY = {"prompt": "a red fox", "num_inference_steps": 2, "guidance_scale": 5.0, "seed": 10}


def pixels(item: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["url"].split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(
    ("overrides", "sizes"),
    [
        ({}, ()),  # not compiled: calls run at their own size
        ({"compile_vae": True}, (1, 2, 4)),  # batching off: a request of up to 4 images is one call
        ({"compile_unet": True, "max_batch_size": 8}, (1, 2, 4, 8)),
        ({"compile_unet": True, "max_batch_size": 6}, (1, 2, 4, 6)),
        ({"compile_unet": True, "max_images_per_request": 1}, (1,)),
        ({"compile_unet": True, "max_batch_size": 8, "compile_batch_sizes": [2, 8]}, (2, 8)),
    ],
)
def test_buckets_follow_the_largest_call_or_the_setting(overrides: dict[str, Any], sizes: tuple[int, ...], tmp_path: Any) -> None:
    assert Buckets.of(settings_for(tmp_path, **overrides)).sizes == sizes


def test_calls_are_padded_up_or_split_at_the_largest_bucket() -> None:
    assert default_sizes(1) == (1,) and default_sizes(5) == (1, 2, 4, 5)
    assert Buckets().chunks(3) == [(0, 3, 3)]
    buckets = Buckets((1, 2, 4))
    assert [buckets.chunks(n) for n in (1, 2, 3, 4)] == [[(0, 1, 1)], [(0, 2, 2)], [(0, 3, 4)], [(0, 4, 4)]]
    assert Buckets((1, 2)).chunks(5) == [(0, 2, 2), (2, 2, 2), (4, 1, 1)]
    assert Buckets((4,)).chunks(1) == [(0, 1, 4)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[2, 1]", "increasing without repeats"),
        ("[1, 1]", "increasing without repeats"),
        ("[0]", "greater than or equal to 1"),
        ("[1, 8]", "8 is more images than one call ever has (max_batch_size 1, max_images_per_request 4)"),
        ("[]", "at least 1 item"),
        ("1,2", "KUBEDIFFUSERS_COMPILE_BATCH_SIZES"),
    ],
)
def test_bad_compile_batch_sizes_stop_the_runner_with_one_line(value: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_COMPILE_BATCH_SIZES", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(task="text-to-image", model_id="a/b")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_compile_batch_sizes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_COMPILE_BATCH_SIZES", "[1, 2, 4]")
    assert load_settings(task="text-to-image", model_id="a/b").compile_batch_sizes == [1, 2, 4]


def force_buckets(client: TestClient, sizes: tuple[int, ...]) -> None:
    client.app.state.context.model.pipeline.buckets = Buckets(sizes)  # type: ignore[attr-defined]


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every diffusers call."""
    rows: list[int] = []
    real = base.call_pipeline

    def recording(pipe: Any, kwargs: dict[str, Any]) -> Any:
        rows.append(len(kwargs["generator"]))
        return real(pipe, kwargs)

    monkeypatch.setattr(base, "call_pipeline", recording)
    return rows


def generate(client: TestClient, images: int, seed: int = 10) -> list[dict[str, Any]]:
    response = client.post("/text-to-image", json={**BODY, "seed": seed, "num_images_per_prompt": images})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["images"]
    assert [item["seed"] for item in found] == [seed + i for i in range(images)]
    return found


def test_a_padded_call_gives_the_real_rows_the_images_of_an_unpadded_one(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """3 images padded to a call of 4 equal the first 3 of a call of 4 with the same seeds:
    each real row keeps its prompt and generator, padding rows have their own and are dropped."""
    client = make_client(max_images_per_request=4)
    rows = record_calls(monkeypatch)
    force_buckets(client, (1, 2, 4))
    padded, full = generate(client, 3), generate(client, 4)
    assert rows == [4, 4]
    for a, b in zip(padded, full[:3], strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    # Unpadded (no buckets: a call of 3), the same images up to batch-size float rounding.
    force_buckets(client, ())
    for a, b in zip(padded, generate(client, 3), strict=True):
        difference = np.abs(pixels(a) - pixels(b))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert rows == [4, 4, 3]


def test_a_call_past_the_largest_bucket_is_split_and_keeps_each_seed(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_images_per_request=4)
    rows = record_calls(monkeypatch)
    force_buckets(client, (2,))
    three = generate(client, 3)
    assert rows == [2, 2]  # 2, then 1 padded to 2
    pair, last = generate(client, 2), generate(client, 1, seed=12)
    for a, b in zip(three, [*pair, *last], strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_a_split_call_reports_its_steps_across_the_calls(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_images_per_request=4)
    pipeline = client.app.state.context.model.pipeline  # type: ignore[attr-defined]
    pipeline.buckets = Buckets((2,))
    work = pipeline.prepare(
        pipeline.warmup_work().params.model_copy(update={"num_inference_steps": 2, "num_images_per_prompt": 3}), {}, client.app.state.context.settings
    )  # type: ignore[attr-defined]
    seen: list[tuple[int, int]] = []
    pipeline.run_batch([work], lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_warm_up_runs_every_bucket_with_and_without_guidance(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[float, int]] = []
    real = base.BatchedPipeline.run_batch

    def recording(self, works, on_step=None):  # type: ignore[no-untyped-def]
        seen.extend((w.params.guidance_scale, w.num_images) for w in works)
        return real(self, works, on_step)

    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic=None: fn)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(base.BatchedPipeline, "run_batch", recording)
    make_client(compile_vae=True, max_batch_size=2, max_images_per_request=1, compile_batch_sizes=[1, 2])
    assert seen == [(7.5, 1), (0.0, 1), (7.5, 2), (0.0, 2)]


def test_the_recompilation_counter_counts_only_compilations_after_it_is_installed() -> None:
    """Real dynamo (the eager backend: no code generation), static shapes as the runner compiles."""
    counter = Counter("kubediffusers_recompilations", "test", registry=CollectorRegistry())
    watch = RecompileWatch(counter)
    double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    double(torch.ones(1))  # compiled before: not counted
    watch.install()
    try:
        double(torch.ones(1))  # the compiled graph: no compilation
        assert counter._value.get() == 0
        double(torch.ones(3))  # a new shape
        assert counter._value.get() == 1
        double(torch.ones(3))
        assert counter._value.get() == 1
    finally:
        watch.remove()
    double(torch.ones(5))
    assert counter._value.get() == 1


def test_the_recompile_limit_leaves_room_for_every_bucket() -> None:
    import torch._dynamo

    allow_bucket_graphs(Buckets(tuple(2**i for i in range(9))))  # 1..256: 10 denoiser batch sizes
    assert torch._dynamo.config.recompile_limit >= 10
