"""The prompt-embedding cache (issue 16): a repeated prompt skips the text
encoders, images are exactly those of an uncached run, the cache is bounded
(LRU) and keyed by prompt, negative prompt and guidance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubediffusers.runner.model import find_snapshot
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline
from kubediffusers.runner.types import Work
from tests.runner.helpers import settings_for

MODELS = {"sd": "kubediffusers/tiny-text-to-image", "sdxl": "kubediffusers/tiny-sdxl"}


def load(model_dir: Path, arch: str, size: int) -> TextToImagePipeline:
    settings = settings_for(model_dir, model_id=MODELS[arch], prompt_cache_size=size)
    return TextToImagePipeline.load(find_snapshot(settings)[0], settings)


def images(pipeline: TextToImagePipeline, *requests: tuple[str, str, float]) -> list[np.ndarray]:
    works = [
        Work(params=TextToImageParams(prompt=p, negative_prompt=n, guidance_scale=g, num_inference_steps=1), seed=i, num_images=1)
        for i, (p, n, g) in enumerate(requests)
    ]
    return [np.asarray(item.image) for result in pipeline.run_batch(works) for item in result]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_cached_embeddings_give_the_same_images_and_skip_the_encoders(arch: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, cached = load(model_dir, arch, 0), load(model_dir, arch, 2)
    calls: list[Any] = []
    real = cached.pipe.text_encoder.forward
    monkeypatch.setattr(cached.pipe.text_encoder, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = [("a cat", "blurry", 7.5), ("a dog", "", 7.5)]
    reference = images(plain, *batch)
    first = images(cached, *batch)
    encoded = len(calls)
    assert encoded > 0 and cached.prompt_cache.misses == 2
    again = images(cached, *batch)
    assert len(calls) == encoded and cached.prompt_cache.hits == 2  # the encoders did not run again
    for a, b, c in zip(reference, first, again, strict=True):
        # Encoding prompts one by one instead of as one batch moves float rounding only.
        difference = np.abs(a.astype(int) - b.astype(int))
        assert difference.max() <= 2 and difference.mean() < 0.05, (difference.max(), difference.mean())
        assert np.array_equal(b, c)


def test_the_cache_is_bounded_and_keyed_by_negative_prompt_and_guidance(model_dir: Path) -> None:
    pipeline = load(model_dir, "sd", 2)
    cache = pipeline.prompt_cache
    images(pipeline, ("a cat", "", 7.5))
    images(pipeline, ("a cat", "blurry", 7.5))  # another negative prompt: another entry
    assert (cache.misses, len(cache)) == (2, 2)
    images(pipeline, ("a cat", "", 0.0))  # no guidance: no negative embeddings, another entry; the oldest goes
    assert (cache.misses, len(cache)) == (3, 2)
    images(pipeline, ("a cat", "", 7.5))  # evicted: encoded again
    assert cache.misses == 4 and cache.hits == 0


def test_a_size_of_zero_turns_it_off(model_dir: Path) -> None:
    pipeline = load(model_dir, "sd", 0)
    images(pipeline, ("a cat", "", 7.5))
    assert len(pipeline.prompt_cache) == 0 and pipeline.prompt_cache.misses == 0
