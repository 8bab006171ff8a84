"""Every documented optimization preset loads through the runner's own load
path on the tiny models, with and without the tiny VAE, and generates
(issue 16: tinyVae with fuseQkv failed at load, exactly as the docs recommended).

The presets are the bench's (``dev.bench.arch.PRESETS``), which
docs/configuration.md documents. Compiling for real takes minutes on this
CPU: for the compile presets torch.compile is recorded, the load is real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kubediffusers.runner.dev.bench.arch import PRESETS
from kubediffusers.runner.dev.tiny import TINY_VAE_ID, ensure_tiny_vae, tiny_model_id
from kubediffusers.runner.model import find_snapshot
from kubediffusers.runner.params import TextToImageParams
from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline
from kubediffusers.runner.types import Work
from tests.runner.helpers import settings_for

MODELS = {"sd": tiny_model_id("text-to-image"), "sdxl": "kubediffusers/tiny-sdxl"}


@pytest.mark.parametrize("tiny_vae", [False, True], ids=["vae", "tiny-vae"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_each_documented_preset_loads_and_generates(
    arch: str, preset: str, tiny_vae: bool, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []

    def recording_compile(fn: Any, mode: str) -> Any:
        compiled.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(var, raising=False)
    options: dict[str, Any] = dict(PRESETS[preset], compile_cache_dir=tmp_path)
    if tiny_vae:
        ensure_tiny_vae(model_dir)
        options["tiny_vae_id"] = TINY_VAE_ID
    settings = settings_for(model_dir, model_id=MODELS[arch], **options)
    pipeline = TextToImagePipeline.load(find_snapshot(settings)[0], settings)

    assert type(pipeline.pipe.vae).__name__ == ("AutoencoderTiny" if tiny_vae else "AutoencoderKL")
    fused = [name for name, module in pipeline.pipe.unet.named_modules() if getattr(module, "fused_projections", False)]
    assert bool(fused) == settings.fuse_qkv
    assert compiled == [settings.compile_mode.value] * (settings.compile_unet + settings.compile_vae)
    params = TextToImageParams(prompt="a cat", num_inference_steps=1, guidance_scale=7.5)
    (images,) = pipeline.run_batch([Work(params=params, seed=0, num_images=2)])
    assert [img.image.size for img in images] == [pipeline.default_size()[::-1]] * 2
    assert all(img.image.mode == "RGB" for img in images)
