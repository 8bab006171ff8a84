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


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """torch.compile recorded, (mode, what it compiled), not run: compiling for real takes minutes here."""
    recorded: list[tuple[str, str]] = []

    def recording_compile(fn: Any, mode: str, dynamic: bool | None = None) -> Any:
        recorded.append((mode, getattr(fn, "__qualname__", type(fn).__name__)))
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return recorded


@pytest.mark.parametrize("tiny_vae", [False, True], ids=["vae", "tiny-vae"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_each_documented_preset_loads_and_generates(
    arch: str, preset: str, tiny_vae: bool, model_dir: Path, tmp_path: Path, compiles: list[tuple[str, str]]
) -> None:
    options: dict[str, Any] = dict(PRESETS[preset], compile_cache_dir=tmp_path)
    if tiny_vae:
        ensure_tiny_vae(model_dir)
        options["tiny_vae_id"] = TINY_VAE_ID
    settings = settings_for(model_dir, model_id=MODELS[arch], **options)
    pipeline = TextToImagePipeline.load(find_snapshot(settings)[0], settings)

    assert type(pipeline.pipe.vae).__name__ == ("AutoencoderTiny" if tiny_vae else "AutoencoderKL")
    fused = [name for name, module in pipeline.pipe.unet.named_modules() if getattr(module, "fused_projections", False)]
    assert bool(fused) == settings.fuse_qkv
    assert [mode for mode, _ in compiles] == [settings.compile_mode.value] * (settings.compile_unet + settings.compile_vae)
    params = TextToImageParams(prompt="a cat", num_inference_steps=1, guidance_scale=7.5)
    (images,) = pipeline.run_batch([Work(params=params, seed=0, num_images=2)])
    assert [img.image.size for img in images] == [pipeline.default_size()[::-1]] * 2
    assert all(img.image.mode == "RGB" for img in images)


def test_sdxl_vae_runs_in_bfloat16_without_the_per_call_upcast(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU with bfloat16, a float16 SDXL keeps its VAE in bfloat16 instead of
    upcasting it to float32 on every call (applied at load when the device has
    bfloat16; called directly here, on the CPU)."""
    from kubediffusers.runner import optimizations

    settings = settings_for(model_dir, model_id=MODELS["sdxl"])
    pipeline = TextToImagePipeline.load(find_snapshot(settings)[0], settings)
    pipe = pipeline.pipe
    assert pipe.vae.config.force_upcast  # what diffusers would upcast in float16
    assert optimizations.vae_without_upcast(pipe) == "vae-bf16"
    assert pipe.vae.dtype == torch.bfloat16 and not pipe.vae.config.force_upcast
    upcasts: list[int] = []
    monkeypatch.setattr(type(pipe), "upcast_vae", lambda self: upcasts.append(1))
    params = TextToImageParams(prompt="a cat", num_inference_steps=1, guidance_scale=7.5)
    (images,) = pipeline.run_batch([Work(params=params, seed=0, num_images=1)])
    assert upcasts == [] and images[0].image.size == pipeline.default_size()[::-1]
    assert optimizations.vae_without_upcast(pipe) == ""  # once is enough; a tiny VAE or SD's VAE: nothing to do


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_the_gpu_preset_with_compiled_text_encoders_loads_and_generates(arch: str, model_dir: Path, tmp_path: Path, compiles: list[tuple[str, str]]) -> None:
    """compile.textEncoder on top of the gpu preset: every text encoder compiled (SDXL's two)."""
    settings = settings_for(model_dir, model_id=MODELS[arch], compile_cache_dir=tmp_path, compile_text_encoder=True, **PRESETS["gpu"])
    pipeline = TextToImagePipeline.load(find_snapshot(settings)[0], settings)
    encoders = ["CLIPTextModel.forward"] + (["CLIPTextModelWithProjection.forward"] if arch == "sdxl" else [])
    assert [what for _, what in compiles[2:]] == encoders  # after the UNet and the VAE decoder
    params = TextToImageParams(prompt="a cat", num_inference_steps=1, guidance_scale=7.5)
    (images,) = pipeline.run_batch([Work(params=params, seed=0, num_images=2)])
    assert [img.image.size for img in images] == [pipeline.default_size()[::-1]] * 2
