"""UNet feature reuse (deepcacheInterval), written in the runner instead of the
unmaintained DeepCache package: deep blocks run only on every interval-th step,
each pipeline call starts with a full step, and a transformer checkpoint
refuses the option at start-up with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient

from kubediffusers.runner import optimizations
from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from kubediffusers.runner.model import find_snapshot
from tests.runner.helpers import settings_for


def _pipe(model_dir: Path) -> Any:
    from diffusers import AutoPipelineForText2Image

    snapshot, _ = find_snapshot(settings_for(model_dir))
    pipe = AutoPipelineForText2Image.from_pretrained(snapshot, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe: Any, steps: int) -> np.ndarray:
    return pipe("a cat", num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def test_deep_blocks_run_every_interval_th_step_only(model_dir: Path) -> None:
    pipe = _pipe(model_dir)
    reference = _generate(pipe, 4)
    calls = {"mid": 0, "unet": 0}
    mid_forward, unet_forward = pipe.unet.mid_block.forward, pipe.unet.forward

    def mid(*args: Any, **kwargs: Any) -> Any:
        calls["mid"] += 1
        return mid_forward(*args, **kwargs)

    def unet(*args: Any, **kwargs: Any) -> Any:
        calls["unet"] += 1
        return unet_forward(*args, **kwargs)

    pipe.unet.mid_block.forward, pipe.unet.forward = mid, unet
    applied = optimizations.apply(pipe, settings_for(model_dir, attention="default", deepcache_interval=2), torch.float32)
    assert applied == ["deepcache-2"]
    image = _generate(pipe, 4)
    assert calls == {"unet": 4, "mid": 2}  # steps 0 and 2 in full, 1 and 3 from kept features
    assert np.isfinite(image).all() and not np.array_equal(image, reference)
    assert np.abs(image - reference).mean() < 0.25  # close to the full computation
    _generate(pipe, 3)  # a second call starts with a full step, whatever the first left
    assert calls == {"unet": 7, "mid": 4}


def test_a_transformer_checkpoint_refuses_deepcache_at_start_up(model_dir: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    ensure_tiny_model("text-to-image", model_dir, arch="sd3")
    client: TestClient = make_client("text-to-image", model_id=tiny_model_id("text-to-image", "sd3"), deepcache_interval=2)
    health = client.get("/health").json()
    assert health["status"] == "ERROR"
    assert "deepcacheInterval reuses UNet features; StableDiffusion3Pipeline has a transformer, not a UNet" in health["detail"]
