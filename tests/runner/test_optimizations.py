"""Load-time optimizations on the tiny pipeline: each option applies, the
pipeline still generates, and outputs stay what they were where they should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kubediffusers.runner import optimizations
from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.model import find_snapshot
from tests.runner.helpers import settings_for


def load(model_dir: Path, **options: Any) -> tuple[Any, list[str]]:
    from diffusers import AutoPipelineForText2Image

    settings = settings_for(model_dir, **options)
    snapshot, _ = find_snapshot(settings)
    pipe = AutoPipelineForText2Image.from_pretrained(snapshot, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe, optimizations.apply(pipe, settings, torch.float32)


def generate(pipe: Any) -> np.ndarray:
    out = pipe("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    return out.images[0]


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> np.ndarray:
    pipe, applied = load(model_dir, attention="default")
    assert applied == []
    return generate(pipe)


def test_sdpa_is_the_default_and_changes_nothing_numerically(model_dir: Path, reference: np.ndarray) -> None:
    pipe, applied = load(model_dir)
    assert applied == ["sdpa"]
    assert np.abs(generate(pipe) - reference).max() < 1e-4


def test_memory_layout_and_vae_options(model_dir: Path, reference: np.ndarray) -> None:
    pipe, applied = load(model_dir, fuse_qkv=True, channels_last=True, vae_slicing=True)
    assert applied == ["sdpa", "fused-qkv", "channels-last", "vae-slicing"]
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(generate(pipe) - reference).max() < 1e-3


def test_deepcache_reuses_features_and_still_generates(model_dir: Path, reference: np.ndarray) -> None:
    pipe, applied = load(model_dir, deepcache_interval=2)
    assert applied == ["sdpa", "deepcache-2"]
    image = generate(pipe)
    assert image.shape == reference.shape and np.isfinite(image).all()


def test_compile_wraps_the_denoiser_and_vae_and_caches_on_the_claim(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling for real takes a minute on this CPU: torch.compile is recorded
    here, and measured for real by `kubediffusers-bench --compile`."""
    calls: list[tuple[str, bool | None]] = []

    def fake_compile(fn: Any, mode: str, dynamic: bool | None = None) -> Any:
        calls.append((mode, dynamic))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    _, applied = load(model_dir, compile_unet=True, compile_vae=True, compile_mode="reduce-overhead", compile_cache_dir=tmp_path)
    assert applied == ["sdpa", "compiled-unet:reduce-overhead", "compiled-vae:reduce-overhead"]
    assert calls == [("reduce-overhead", False)] * 2  # static graphs, one per compiled batch size (pipelines.buckets)
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_compiled_text_encoders_keep_their_module_and_copy_their_outputs(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward is compiled in place (encode_prompt still reads the module's dtype and
    config) and what leaves it is a copy: a CUDA graph's next run overwrites its outputs."""
    graph_outputs: list[torch.Tensor] = []

    def fake_compile(fn: Any, mode: str, dynamic: bool | None = None) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            graph_outputs.append(out.last_hidden_state)
            return out

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    eager, _ = load(model_dir)
    want = eager.encode_prompt("a cat", "cpu", 1, True, "")
    pipe, applied = load(model_dir, compile_text_encoder=True, compile_mode="reduce-overhead")
    assert applied == ["sdpa", "compiled-text-encoder:reduce-overhead"]
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel" and pipe.unet is not None
    got = pipe.encode_prompt("a cat", "cpu", 1, True, "")
    assert len(graph_outputs) == 2  # the prompt and, with guidance, the negative one
    out = pipe.text_encoder(torch.ones(1, 77, dtype=torch.long))
    assert out.last_hidden_state.data_ptr() != graph_outputs[-1].data_ptr()
    assert torch.equal(out.last_hidden_state, graph_outputs[-1])
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_compile_cache_defaults_to_the_model_claim(model_dir: Path) -> None:
    assert settings_for(model_dir).resolved_compile_cache_dir() == model_dir / ".compile-cache"


def test_missing_tiny_vae_is_a_clear_not_ready_reason(model_dir: Path) -> None:
    with pytest.raises(ModelUnavailable, match="tiny VAE madebyollin/taesd@main is not in the cache"):
        load(model_dir, tiny_vae_id="madebyollin/taesd")


def test_offload_and_compile_do_not_mix(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="cpu_offload cannot be combined"):
        settings_for(model_dir, cpu_offload="model", compile_unet=True)
    with pytest.raises(ValueError, match="cpu_offload cannot be combined"):
        settings_for(model_dir, cpu_offload="model", compile_text_encoder=True)
    with pytest.raises(ValueError, match="compile_text_encoder cannot be combined with text_encoder_offload"):
        settings_for(model_dir, text_encoder_offload=True, compile_text_encoder=True)
    assert settings_for(model_dir, compile_text_encoder=True).compiles and not settings_for(model_dir).compiles


def test_tiny_vae_from_the_cache_decodes_in_place_of_the_vae(model_dir: Path) -> None:
    from kubediffusers.runner.dev.tiny import TINY_VAE_ID, ensure_tiny_vae

    ensure_tiny_vae(model_dir)
    pipe, applied = load(model_dir, tiny_vae_id=TINY_VAE_ID)
    assert applied == ["tiny-vae", "sdpa"]
    assert type(pipe.vae).__name__ == "AutoencoderTiny"
    image = generate(pipe)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_runner_with_optimizations_serves_over_http(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(fuse_qkv=True, channels_last=True, deepcache_interval=2, vae_slicing=True)
    r = client.post("/text-to-image", json={"prompt": "a cat", "num_inference_steps": 4, "num_images_per_prompt": 2})
    assert r.status_code == 200 and len(r.json()["images"]) == 2


def test_compiled_pipelines_warm_up_every_shape_requests_will_have(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """With compile on, warm-up covers guidance on and off and the largest batch,
    so the first real requests do not pay for a recompilation."""
    from kubediffusers.runner.pipelines.base import BatchedPipeline

    seen: list[tuple[float, int]] = []
    real = BatchedPipeline.run_batch

    def recording(self, works, on_step=None):  # type: ignore[no-untyped-def]
        seen.extend((w.params.guidance_scale, w.num_images) for w in works)
        return real(self, works, on_step)

    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic=None: fn)  # compiling for real takes a minute here
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    monkeypatch.setattr(BatchedPipeline, "run_batch", recording)
    make_client(compile_unet=True, max_batch_size=4)
    assert seen == [(7.5, 1), (0.0, 1), (7.5, 2), (0.0, 2), (7.5, 4), (0.0, 4)]  # buckets 1, 2, 4
    seen.clear()
    make_client(compile_text_encoder=True, max_batch_size=4)  # the text encoder alone: the same shapes
    assert seen == [(7.5, 1), (0.0, 1), (7.5, 2), (0.0, 2), (7.5, 4), (0.0, 4)]
    seen.clear()
    make_client()
    assert len(seen) == 1  # not compiled: one warm-up request
