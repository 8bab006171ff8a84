"""The compiled text encoder (compile_text_encoder), for real, with inductor on the CPU.

Once ready nothing compiles: a call that misses the graphs warm-up compiled
runs eagerly and is counted (kubediffusers_uncompiled_calls_total, reason
shape: pipelines.recompiles). The first test loads through the model holder as
the runner does: new prompts, alone and batched, guided and not, must all run
graphs warm-up compiled, with the prompt cache (every prompt encoded alone: one
graph) and without it (the batch's prompts at once: one graph per bucket).
Their images are an uncompiled pipeline's, up to float rounding. The second
runs the same setting end to end in a runner process.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubediffusers.runner.dev.tiny import tiny_model_id
from kubediffusers.runner.metrics import Metrics
from kubediffusers.runner.model import ModelHolder, find_snapshot
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.types import Work
from tests.runner.helpers import wait_until
from tests.runner.test_compile_http import batched_behind_a_long_request, is_ready, post, recompilations, start_compiled, stop, uncompiled

pytestmark = [pytest.mark.slow, pytest.mark.compile]


def settings(model_dir: Path, tmp_path: Path, **options: Any) -> RunnerSettings:
    return RunnerSettings(
        task="text-to-image",
        model_id=tiny_model_id("text-to-image"),
        model_dir=model_dir,
        device="cpu",
        max_batch_size=3,
        max_images_per_request=4,  # buckets 1, 2, 4
        compile_cache_dir=tmp_path / "compile-cache",
        **options,
    )


def work(prompt: str, images: int, guidance: float) -> Work:
    params = TextToImageParams(prompt=prompt, num_inference_steps=2, guidance_scale=guidance, num_images_per_prompt=images, seed=images)
    return Work(params=params, seed=images, num_images=images)


def pixels(results: list[Any]) -> list[np.ndarray]:
    return [np.asarray(item.image, dtype=np.int16) for item in results]


@pytest.mark.parametrize("cache", [64, 0], ids=["prompt-cache", "no-prompt-cache"])
def test_new_prompts_run_only_graphs_warm_up_compiled(model_dir: Path, tmp_path: Path, cache: int) -> None:

    compiled_settings = settings(model_dir, tmp_path, compile_text_encoder=True, prompt_cache_size=cache)
    metrics = Metrics("text-to-image")
    holder = ModelHolder(compiled_settings, ThreadPoolExecutor(1), metrics)
    asyncio.run(holder.load())
    assert holder.ready, holder.reason
    pipeline = holder.require_ready()
    works = [work(f"a lighthouse, {n} images, guidance {g:g}", n, g) for n in (1, 2, 3, 4) for g in (5.0, 0.0)]
    pair = [work("the first of a batch", 1, 5.0), work("the second of a batch", 2, 5.0)]
    try:
        served = [pixels(pipeline.generate([w])[0]) for w in works]  # as the worker calls it
        batched = [pixels(r) for r in pipeline.generate(pair)]
    finally:
        holder.close()
    assert metrics.uncompiled_calls.labels(reason="shape")._value.get() == 0
    assert metrics.uncompiled_calls.labels(reason="size")._value.get() == 0
    eager_settings = settings(model_dir, tmp_path, prompt_cache_size=cache, warmup=False)
    eager = TextToImagePipeline.load(find_snapshot(eager_settings)[0], eager_settings)
    for got, w in [*zip(served, works, strict=True), *zip(batched, pair, strict=True)]:
        for a, b in zip(got, pixels(eager.run(w)), strict=True):
            assert np.abs(a - b).max() <= 2, w.params.prompt


def test_a_runner_process_compiles_its_text_encoder_before_ready(model_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    proc, url = start_compiled(model_dir, tmp_path, KUBEDIFFUSERS_COMPILE_TEXT_ENCODER="true")
    try:
        wait_until(lambda: is_ready(url), timeout=600, what="compiled warm-up")
        ready = time.monotonic()
        for images in (1, 4):
            post(url, images, seed=images, prompt=f"a new prompt for {images}")
        batched_behind_a_long_request(url, (1, 10, {"prompt": "first"}), (2, 11, {"prompt": "second"}))  # two new prompts, one call
        assert recompilations(url) == 0 and uncompiled(url, "shape") == 0
        print(f"compiled warm-up {ready - started:.0f} s, requests {time.monotonic() - ready:.0f} s")
    finally:
        output = stop(proc)
        print(output[-4000:])
    assert "compiling after ready" not in output
